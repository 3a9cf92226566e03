from secoctl.cli import main

main()
