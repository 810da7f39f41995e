"""The pure core: pixelpost's logic on bytes, strings and records, with no sockets, files
or clocks of its own (the caller passes the time and the random source). HTML scanning
and the MIME splice, tokens and ids, SES's event and mail objects, the classification
of opens and clicks, bounce types, statistics, the retry schedule, throttles and
limits. Test it without servers; everything else imports it, it imports nothing above
`pixelpost.config` and `pixelpost.errors`."""
