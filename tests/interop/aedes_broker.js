// The aedes MQTT broker (MQTT 3.1.1 only; it refuses an MQTT 5 CONNECT in its CONNACK) on
// 127.0.0.1:PORT, for the interop tests. Usage: node aedes_broker.js PORT
// Logs connections and refusals on stdout; exits 0 on SIGTERM.
'use strict'

const net = require('net')
const aedes = require('aedes')()

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`usage: node aedes_broker.js PORT (got ${process.argv[2]})`)
  process.exit(2)
}

const stamp = () => new Date().toISOString()
aedes.on('client', (client) => console.log(`${stamp()} client connected: ${client.id}`))
aedes.on('clientDisconnect', (client) => console.log(`${stamp()} client disconnected: ${client.id}`))
aedes.on('connectionError', (client, err) =>
  console.log(`${stamp()} connection error ${client && client.id}: ${err.message}`))
aedes.on('clientError', (client, err) =>
  console.log(`${stamp()} client error ${client && client.id}: ${err.message}`))

const server = net.createServer(aedes.handle)
server.listen(port, '127.0.0.1', () =>
  console.log(`${stamp()} aedes ${aedes.version || ''} listening on 127.0.0.1:${port}`))
server.on('error', (err) => {
  console.error(`aedes: ${err.message}`)
  process.exit(1)
})

process.on('SIGTERM', () => {
  server.close()
  aedes.close(() => process.exit(0))
})
