from sessiongate.cli import main

main()
