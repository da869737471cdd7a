from zipmodel.cli import main

main()
