"""streamrec's streaming side: the Faust app, its agents, the local broker, replay and the CLI."""
