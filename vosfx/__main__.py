from vosfx.cli import main

main()
