"""The relay's front door: the SMTP listener (`server`), who may send (`access`,
`auth`), reading a message safely (`data`), and accepting it (`handler`); what it
answers is named in `relay.replies`."""
