"""Mail on its way out: the spool on disk (`spool`, `spoolfile`), the delivery queue
and its attempts (`queue`, `attempt`), and the upstream it goes to (`upstream`)."""
