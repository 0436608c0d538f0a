"""The request pipeline, one stage a module, in the order a request meets them."""
