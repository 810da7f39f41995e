"""The application shell: the command line (`cli`), the composition root that assembles
the relay, the tracker and the event pipeline from the configuration (`runtime`), and
the child processes it keeps running. It imports every other package; nothing imports
it."""
