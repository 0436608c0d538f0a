"""upstreams/local"""
