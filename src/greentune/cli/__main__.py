from greentune.cli import main

main()
