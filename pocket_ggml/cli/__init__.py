"""The command-line programs: thin click wrappers over the API, the converter, the bench and the servers."""
