"""The pure core: pixelpost's logic on bytes, strings and records, with no sockets, no
store and no event loop (the time and the random source are parameters, defaulting to
the real ones). HTML scanning and the MIME splice, tokens and ids, SES's event and mail
objects, the classification of opens and clicks, bounce types, statistics, the retry
schedule, throttles, limits and the values configuration is written in. Test it
without servers. Everything else may import it; it imports only `pixelpost.errors`
(pyproject.toml's import contracts hold it to that)."""
