from mudpuppy.launcher.cli import main

main()
