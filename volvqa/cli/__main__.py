from volvqa.cli import main

main()
