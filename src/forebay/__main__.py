from forebay.cli import main

main()
