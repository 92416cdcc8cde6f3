from depmesh.cli import main

main()
