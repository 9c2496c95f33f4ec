"""Imported only by the refiner pool's forkserver (its preload list): the server and the
workers it forks ignore SIGINT and SIGTERM, which reach the whole process group on Ctrl-C
or from a scheduler; the run itself stops after its batch in flight and shuts them down."""

import signal

for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, signal.SIG_IGN)
