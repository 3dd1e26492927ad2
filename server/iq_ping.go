package server

// nsPing is XEP-0199 XMPP Ping: the server and every account answer a
// ping get with an empty result (emptyResult in the IQ table).
const nsPing = "urn:xmpp:ping"
