"""The `aevae` command line: flags, and commands that parse, call the library and print."""
