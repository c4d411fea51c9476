// A device on MQTT.js (npm), as the end-to-end tests drive it: connects with a protocol
// version (5, 4 = 3.1.1, 3 = 3.1), publishes each entry of a JSON plan in order, waiting for
// its answer, and prints what the gateway answered, one JSON line each, as paho_device.py does:
//   {"connack": {"rc": 0, "props": {...}}}
//   {"i": 0, "rc": 0, "reason": null}
// With MQTT 5 it lets MQTT.js use topic aliases (autoUseTopicAlias), so repeated topics go out
// as aliases the gateway must resolve.
//
// node mqttjs_device.mjs PORT VERSION CLIENT_ID PLAN_FILE
import { readFileSync } from 'node:fs'
import mqtt from 'mqtt'

const [port, version, clientId, planFile] = process.argv.slice(2)
const plan = JSON.parse(readFileSync(planFile, 'utf8'))
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
  protocolVersion: Number(version),
  // MQTT 3.1 names itself "MQIsdp"; 3.1.1 and 5 "MQTT".
  protocolId: Number(version) === 3 ? 'MQIsdp' : 'MQTT',
  clientId,
  reconnectPeriod: 0,
  connectTimeout: 10000,
  autoUseTopicAlias: Number(version) === 5,
})
client.on('connect', (connack) => {
  say({ connack: { rc: connack.reasonCode ?? connack.returnCode ?? 0, props: connack.properties ?? {} } })
  run().then(() => client.end(false, {}, () => process.exit(0)))
})
client.on('disconnect', (packet) => {
  say({ disconnect: packet.reasonCode, reason: packet.properties?.reasonString ?? null })
})
client.on('error', (err) => {
  say({ error: err.message, rc: err.code ?? null })
  process.exit(3)
})
setTimeout(() => { say({ error: 'timeout' }); process.exit(4) }, 60000)

async function run () {
  for (const [i, entry] of plan.entries()) {
    const options = { qos: entry.qos ?? 1 }
    if (Number(version) === 5) {
      const properties = {}
      if (entry.user) properties.userProperties = Object.fromEntries(entry.user)
      if (entry.content_type) properties.contentType = entry.content_type
      if (entry.utf8) properties.payloadFormatIndicator = true
      options.properties = properties
    }
    await new Promise((resolve) => {
      client.publish(entry.topic, entry.payload, options, (err, packet) => {
        if (err) {
          say({ i, rc: err.code ?? null, reason: packet?.properties?.reasonString ?? null })
        } else {
          say({ i, rc: 0, reason: null })
        }
        resolve()
      })
    })
  }
}
