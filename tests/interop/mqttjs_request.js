// One MQTT 5 request with MQTT.js, the way a Node.js backend would call a device: subscribe
// to a Response Topic, publish the request with Response Topic, Correlation Data and
// (optionally) a Message Expiry Interval, print the first reply on the Response Topic as one
// JSON line with the properties it carried, and exit.
// Usage: node mqttjs_request.js '{"url", "topic", "responseTopic", "correlationHex",
//                                 "expiry" (optional), "payload", "qos", "timeoutMs"}'
// Correlation Data is given and printed in hex, so that any bytes can be checked.
// Exit status: 0 with a reply, 3 without one within timeoutMs, 2 on a client error.
'use strict'

const mqtt = require('mqtt')

const opts = JSON.parse(process.argv[2])
const client = mqtt.connect(opts.url, {
  protocolVersion: 5,
  clean: true,
  connectTimeout: opts.timeoutMs,
  reconnectPeriod: 0
})

const timer = setTimeout(() => {
  console.error(`mqttjs: no reply on ${opts.responseTopic} within ${opts.timeoutMs} ms`)
  process.exit(3)
}, opts.timeoutMs)

let replied = false
client.on('error', (err) => {
  if (replied) return // closing after the reply
  console.error(`mqttjs: ${err.message}`)
  process.exit(2)
})

client.on('connect', () => {
  client.subscribe(opts.responseTopic, { qos: 1 }, (err) => {
    if (err) {
      console.error(`mqttjs: subscribe failed: ${err.message}`)
      process.exit(2)
    }
    const properties = {
      responseTopic: opts.responseTopic,
      correlationData: Buffer.from(opts.correlationHex, 'hex'),
      contentType: 'application/json'
    }
    if (opts.expiry !== undefined && opts.expiry !== null) {
      properties.messageExpiryInterval = opts.expiry
    }
    client.publish(opts.topic, opts.payload, { qos: opts.qos, properties })
  })
})

client.on('message', (topic, payload, packet) => {
  if (replied) return
  replied = true
  const p = packet.properties || {}
  console.log(JSON.stringify({
    topic,
    payload: payload.toString('utf8'),
    qos: packet.qos,
    properties: {
      contentType: p.contentType === undefined ? null : p.contentType,
      correlationData: p.correlationData === undefined ? null : p.correlationData.toString('hex'),
      messageExpiryInterval: p.messageExpiryInterval === undefined ? null : p.messageExpiryInterval
    }
  }))
  clearTimeout(timer)
  client.end(false, () => process.exit(0))
})
