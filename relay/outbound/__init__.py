"""Mail on its way out: the spool on disk (`spool`, `spoolfile`), the hand-off to it from
the front door (`handoff`), the delivery queue (`queue`) and its parts (`fresh`,
`schedule`, `runner`, `scan`, `deliver`, `notify`), each delivery's attempt
(`attempt`), and the upstream it goes to (`upstream`)."""
