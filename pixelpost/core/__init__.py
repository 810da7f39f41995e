"""The pure core: pixelpost's logic on bytes, strings and records, with no sockets, no
store and no event loop (the time and the random source are parameters, defaulting to
the real ones). HTML scanning and the MIME splice, tokens and ids, SES's event and mail
objects, returned reports (DSN, ARF), the classification of opens and clicks, bounce
types, statistics and reputation, the retry schedule, throttles, limits and the values
configuration is written in. Test it without servers. Everything else may import it;
of pixelpost it imports only `pixelpost.errors`, and of the world no network, store or
event loop (pyproject.toml's import contracts hold it to that)."""
