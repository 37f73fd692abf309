/* dag._native: a commit's hot paths in C: setting one key of a cached HAMT and the table of
 * cached nodes it works on (NodeTable), and the block store's Bloom filter of CIDs, the rows
 * of its index merge and the insert of a commit's blocks (at the end of this file).
 *
 * hamt.update_cached_encoded calls hamt_set for a commit that sets one key (the engine's
 * common case: an event changes one entity variable). It does, in one call, what hamt._cset
 * does level by level in Python: walk the key's path through the cached nodes, splice the
 * new entry into its bucket, then rebuild each node on the way up from its cached element
 * encodings, hash it and link it from its parent. The result is the same bytes and CIDs as
 * the Python path (tests/dag/test_dag_native.py compares them on random maps of every
 * bitWidth). Anything else it declines by returning None, and hamt.py's own code does it:
 * a bucket that overflows into a child node, a link that is not a 36-byte CIDv1, a node over
 * the block limit, the maximum depth.
 *
 * Element bytes come from hamt._Node, whose encodings were sliced from strictly decoded
 * blocks or made by our encoder, so they are canonical; every read is still bounds-checked,
 * and bytes that do not parse make the call decline (None) rather than read past them.
 *
 * cbor_encode is cbor.encode for values of the data model's exact types (anything else goes
 * back to the Python encoder); cbor_decode is cbor.decode for canonical bytes, and cbor_links
 * its checks alone, giving a block's CIDs (anything refused goes to the Python decoder, whose
 * error says where). sign_spliced signs a head's payload with libsodium's Ed25519
 * (the function PyNaCl calls, bound by did.py) straight into the envelope's bytes.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <structmember.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#define MAX_BLOCK (256 * 1024)
#define BUCKET_SIZE 3
#define MAX_WIDTH 16
#define CID_LEN 36
#define LINK_LEN (5 + CID_LEN)

/* Attribute names, interned at import. */
static PyObject *S_bits, *S_blob, *S_offs, *S_p, *S_width, *S_map_bytes, *S_prefix;
static PyObject *S_nodes;

/* hamt.NodeCache's estimate of a cached node's memory (NodeCache._weight): tests compare the
 * cache this file leaves with the one the Python path leaves, weights and total included. */
#define WEIGHT_BASE 380
#define WEIGHT_PER_ELEMENT 4

static const unsigned char LINK_PREFIX[5] = {0xd8, 0x2a, 0x58, 0x25, 0x00};
static const unsigned char CID_PREFIX[4] = {0x01, 0x71, 0x12, 0x20};

/* The offset after the CBOR item at `pos`, or -1 if it runs past `n` (or nests too deep). */
static Py_ssize_t
skip_item(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos, int depth)
{
    if (depth > 32 || pos >= n)
        return -1;
    unsigned char first = b[pos++];
    int major = first >> 5, info = first & 31;
    uint64_t v;
    if (info < 24) {
        v = (uint64_t)info;
    }
    else if (info <= 27) {
        int size = 1 << (info - 24);
        if (pos + size > n)
            return -1;
        v = 0;
        for (int j = 0; j < size; j++)
            v = v << 8 | b[pos + j];
        pos += size;
    }
    else {
        return -1;
    }
    switch (major) {
    case 2:
    case 3:
        if (v > (uint64_t)(n - pos))
            return -1;
        return pos + (Py_ssize_t)v;
    case 4:
    case 5: {
        uint64_t items = major == 4 ? v : 2 * v;
        if (items > (uint64_t)(n - pos))  /* each item takes a byte at least */
            return -1;
        for (uint64_t j = 0; j < items; j++) {
            pos = skip_item(b, n, pos, depth + 1);
            if (pos < 0)
                return -1;
        }
        return pos;
    }
    case 6:
        return skip_item(b, n, pos, depth + 1);
    default:  /* ints; simple values and floats (their bytes were read as v) */
        return pos;
    }
}

/* The index of the key at `depth`: bits depth*w .. depth*w+w-1 of the digest, from the most
 * significant bit of its first byte (hamt._Width.index). */
static int
index_at(const unsigned char *digest, int w, int depth)
{
    int bit = depth * w, byte = bit >> 3;
    uint32_t acc = 0;
    for (int j = 0; j < 3; j++)
        acc = acc << 8 | (byte + j < 32 ? digest[byte + j] : 0);
    return (int)((acc >> (24 - (bit & 7) - w)) & ((1u << w) - 1));
}

static Py_ssize_t
rank(const unsigned char *map, int i)
{
    Py_ssize_t r = 0;
    for (int j = 0; j < (i >> 3); j++)
        r += __builtin_popcount(map[j]);
    return r + __builtin_popcount(map[i >> 3] & ((1u << (i & 7)) - 1));
}

/* A CBOR head (major type `major`, argument `v`) into out; its length. */
static int
put_head(unsigned char *out, int major, uint64_t v)
{
    unsigned char m = (unsigned char)(major << 5);
    if (v < 24) {
        out[0] = m | (unsigned char)v;
        return 1;
    }
    int size = v < 0x100 ? 1 : v < 0x10000 ? 2 : v < 0x100000000ull ? 4 : 8;
    out[0] = m | (unsigned char)(24 + (size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3));
    for (int j = 0; j < size; j++)
        out[1 + j] = (unsigned char)(v >> (8 * (size - 1 - j)));
    return 1 + size;
}

typedef struct {
    PyObject *blob;  /* the node's elements, concatenated (a new reference) */
    PyObject *offs;  /* where each starts, then len(blob): native uint32s (a new reference) */
    Py_ssize_t n;    /* how many elements */
    unsigned char *map;  /* its bitmap: map_bytes in `maps` */
    int i;           /* the key's index in this node */
    Py_ssize_t r;    /* the element's position */
    int present;
    PyObject *link;  /* the child's binary CID when the path goes on (a new reference) */
} Level;

/* Offset j of a _Node's offs (bytes of native uint32s). */
static inline Py_ssize_t
off_at(PyObject *offs, Py_ssize_t j)
{
    uint32_t v;
    memcpy(&v, PyBytes_AS_STRING(offs) + 4 * j, 4);
    return (Py_ssize_t)v;
}

typedef struct {
    int w, map_bytes;
    const char *prefix;
    Py_ssize_t prefix_len;
    PyObject *p;
} Width;

/* The bytes of a node of `count` elements (`blob`, concatenated): before, [map, data], after. */
static PyObject *
node_data(const Width *wd, const unsigned char *map, Py_ssize_t count, PyObject *blob,
          const char *before, Py_ssize_t before_len, const char *after, Py_ssize_t after_len)
{
    Py_ssize_t total = before_len + wd->prefix_len + wd->map_bytes + 9 + PyBytes_GET_SIZE(blob) +
                       after_len;
    if (total > MAX_BLOCK + 16)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out), *start = o;
    memcpy(o, before, before_len);
    o += before_len;
    memcpy(o, wd->prefix, wd->prefix_len);
    o += wd->prefix_len;
    memcpy(o, map, wd->map_bytes);
    o += wd->map_bytes;
    o += put_head(o, 4, (uint64_t)count);
    memcpy(o, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob));
    o += PyBytes_GET_SIZE(blob);
    memcpy(o, after, after_len);
    o += after_len;
    if (_PyBytes_Resize(&out, o - start) < 0)
        return NULL;
    if (PyBytes_GET_SIZE(out) > MAX_BLOCK) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

/* sha2-256 of n bytes at b into out (32 bytes), through the low-level calls: OpenSSL 3's
 * one-shot SHA256() fetches the digest by name each time. */
static void
sha256(const void *b, size_t n, unsigned char *out)
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, b, n);
    SHA256_Final(out, &ctx);
}

static PyObject *
cid_of(PyObject *data)
{
    PyObject *cid = PyBytes_FromStringAndSize(NULL, CID_LEN);
    if (cid == NULL)
        return NULL;
    unsigned char *c = (unsigned char *)PyBytes_AS_STRING(cid);
    memcpy(c, CID_PREFIX, 4);
    sha256(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), c + 4);
    return cid;
}

/* -- blocks: dag.cid.CID and dag.block.Block objects made here, their __slots__ set at the
 * offsets bind_blocks read from the classes' member descriptors (what block.py's and cid.py's
 * slot setters do from Python, without a call per slot). */

static PyTypeObject *T_cid, *T_block;
static PyObject *NOT_DECODED, *INT_ONE, *INT_DAG_CBOR;
static Py_ssize_t O_version, O_codec, O_multihash, O_buffer, O_str, O_cid, O_data, O_value;

static int
slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyDict_GetItemString(tp->tp_dict, name);  /* borrowed */
    if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX ||
        (((PyMemberDescrObject *)d)->d_member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "bind_blocks: %.100s.%s is not a __slots__ member",
                     tp->tp_name, name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)d)->d_member->offset;
    return 0;
}

/* A slot of a new object (NULL until set) takes a new reference to v. */
static inline void
put_slot(PyObject *o, Py_ssize_t off, PyObject *v)
{
    Py_INCREF(v);
    *(PyObject **)((char *)o + off) = v;
}

/* A Block of `data` (bytes) whose binary CIDv1 dag-cbor sha2-256 is `cid` (36 bytes). */
static PyObject *
make_block(PyObject *cid_bytes, PyObject *data)
{
    if (T_cid == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dag._native: bind_blocks was not called");
        return NULL;
    }
    PyObject *mh = PyBytes_FromStringAndSize(PyBytes_AS_STRING(cid_bytes) + 2, CID_LEN - 2);
    if (mh == NULL)
        return NULL;
    PyObject *cid = T_cid->tp_alloc(T_cid, 0);
    if (cid == NULL) {
        Py_DECREF(mh);
        return NULL;
    }
    put_slot(cid, O_version, INT_ONE);
    put_slot(cid, O_codec, INT_DAG_CBOR);
    put_slot(cid, O_multihash, mh);
    put_slot(cid, O_buffer, cid_bytes);
    put_slot(cid, O_str, Py_None);
    Py_DECREF(mh);
    PyObject *block = T_block->tp_alloc(T_block, 0);
    if (block == NULL) {
        Py_DECREF(cid);
        return NULL;
    }
    put_slot(block, O_cid, cid);
    put_slot(block, O_data, data);
    put_slot(block, O_value, NOT_DECODED);
    Py_DECREF(cid);
    return block;
}

PyDoc_STRVAR(bind_blocks_doc,
"bind_blocks(cid_type, block_type, not_decoded)\n"
"\n"
"Read the __slots__ offsets of dag.cid.CID (version, codec, multihash, _buffer, _str) and\n"
"dag.block.Block (cid, data, _value); `not_decoded` is block.py's marker of a value not yet\n"
"decoded. block.py calls it once, at import, before spliced or hamt_set make blocks.");

static PyObject *
bind_blocks(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "bind_blocks(cid_type, block_type, not_decoded)");
        return NULL;
    }
    PyTypeObject *c = (PyTypeObject *)args[0], *b = (PyTypeObject *)args[1];
    Py_ssize_t o[8];  /* all read before any is kept: a failed bind leaves the last one whole */
    if (slot_offset(c, "version", &o[0]) < 0 || slot_offset(c, "codec", &o[1]) < 0 ||
        slot_offset(c, "multihash", &o[2]) < 0 || slot_offset(c, "_buffer", &o[3]) < 0 ||
        slot_offset(c, "_str", &o[4]) < 0 || slot_offset(b, "cid", &o[5]) < 0 ||
        slot_offset(b, "data", &o[6]) < 0 || slot_offset(b, "_value", &o[7]) < 0)
        return NULL;
    if (INT_ONE == NULL && (!(INT_ONE = PyLong_FromLong(1)) ||
                            !(INT_DAG_CBOR = PyLong_FromLong(0x71))))
        return NULL;
    O_version = o[0];
    O_codec = o[1];
    O_multihash = o[2];
    O_buffer = o[3];
    O_str = o[4];
    O_cid = o[5];
    O_data = o[6];
    O_value = o[7];
    Py_INCREF(c);
    Py_INCREF(b);
    Py_INCREF(args[2]);
    Py_XSETREF(T_cid, c);
    Py_XSETREF(T_block, b);
    Py_XSETREF(NOT_DECODED, args[2]);
    Py_RETURN_NONE;
}

/* 0 if a METH_FASTCALL function `fn` was given `want` arguments, else -1 with a TypeError. */
static int
nargs_ok(Py_ssize_t nargs, Py_ssize_t want, const char *fn)
{
    if (nargs == want)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (%zd given)", fn, want, nargs);
    return -1;
}

/* 0 if `data` is exactly bytes, else -1 with a TypeError naming the function `fn`. */
static int
bytes_arg(PyObject *data, const char *fn)
{
    if (PyBytes_CheckExact(data))
        return 0;
    PyErr_Format(PyExc_TypeError, "%s: data must be bytes, got %.100s", fn,
                 Py_TYPE(data)->tp_name);
    return -1;
}

PyDoc_STRVAR(spliced_doc,
"spliced(data)\n"
"\n"
"block.Block._spliced in C: the Block of DAG-CBOR bytes `data`, its CIDv1 (dag-cbor,\n"
"sha2-256) computed here; the value is decoded on first use.");

static PyObject *
spliced(PyObject *self, PyObject *data)
{
    if (bytes_arg(data, "spliced") < 0)
        return NULL;
    PyObject *cid = cid_of(data);
    if (cid == NULL)
        return NULL;
    PyObject *block = make_block(cid, data);
    Py_DECREF(cid);
    return block;
}

/* -- cbor.encode in C: the same canonical DAG-CBOR bytes as cbor._write for values of the
 * data model's exact types (str, int, dict, list, tuple, bytes, float, None, True, False and
 * dag.cid.CID, bound by bind_blocks). Anything else, or a value cbor._write refuses, raises
 * here and cbor.encode's Python path runs, so its error (with the value's path) is the one
 * raised. No Python code runs while a value is walked (only exact built-in types are read),
 * so the borrowed items of dicts and lists stay valid. */

#define ENC_MAX_DEPTH 256 /* cbor.MAX_DEPTH */

typedef struct {
    unsigned char *b;
    Py_ssize_t n, cap;
    int heap; /* b is PyMem memory (else the caller's stack buffer) */
} EncBuf;

static int
enc_reserve(EncBuf *w, Py_ssize_t more)
{
    if (w->cap - w->n >= more)
        return 0;
    Py_ssize_t cap = w->cap;
    while (cap - w->n < more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    unsigned char *b = w->heap ? PyMem_Realloc(w->b, (size_t)cap) : PyMem_Malloc((size_t)cap);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (!w->heap)
        memcpy(b, w->b, (size_t)w->n);
    w->b = b;
    w->cap = cap;
    w->heap = 1;
    return 0;
}

static int
enc_head(EncBuf *w, int major, uint64_t v)
{
    if (enc_reserve(w, 9) < 0)
        return -1;
    w->n += put_head(w->b + w->n, major, v);
    return 0;
}

static int
enc_bytes(EncBuf *w, int major, const char *p, Py_ssize_t len)
{
    if (enc_head(w, major, (uint64_t)len) < 0 || enc_reserve(w, len) < 0)
        return -1;
    memcpy(w->b + w->n, p, (size_t)len);
    w->n += len;
    return 0;
}

typedef struct {
    const char *k;
    Py_ssize_t n;
    PyObject *v;
} EncItem;

/* canonical key order: shorter first, then bytewise (keys are unique) */
static int
enc_item_cmp(const void *a, const void *b)
{
    const EncItem *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return memcmp(x->k, y->k, (size_t)x->n);
}

static int
enc_value(EncBuf *w, PyObject *v, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        return s == NULL ? -1 : enc_bytes(w, 3, s, n);
    }
    if (t == &PyLong_Type) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (!overflow)
            return x >= 0 ? enc_head(w, 0, (uint64_t)x) : enc_head(w, 1, (uint64_t)(-1 - x));
        PyObject *u = overflow > 0 ? Py_NewRef(v) : PyNumber_Invert(v); /* -1 - v */
        if (u == NULL)
            return -1;
        unsigned long long m = PyLong_AsUnsignedLongLong(u); /* OverflowError past 2**64-1 */
        Py_DECREF(u);
        if (m == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        return enc_head(w, overflow > 0 ? 0 : 1, (uint64_t)m);
    }
    if (t == &PyDict_Type) {
        if (depth >= ENC_MAX_DEPTH) {
            PyErr_SetString(PyExc_ValueError, "nested too deep");
            return -1;
        }
        Py_ssize_t n = PyDict_GET_SIZE(v), pos = 0, j = 0;
        EncItem small[16], *items = n <= 16 ? small : PyMem_Malloc((size_t)n * sizeof(EncItem));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        PyObject *key, *value;
        int rc = 0;
        while (j < n && PyDict_Next(v, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key)) {
                PyErr_SetString(PyExc_TypeError, "map key");
                rc = -1;
                break;
            }
            items[j].k = PyUnicode_AsUTF8AndSize(key, &items[j].n);
            if (items[j].k == NULL) {
                rc = -1;
                break;
            }
            items[j++].v = value;
        }
        if (rc == 0) {
            qsort(items, (size_t)j, sizeof(EncItem), enc_item_cmp);
            rc = enc_head(w, 5, (uint64_t)j);
            for (Py_ssize_t i = 0; i < j && rc == 0; i++)
                rc = enc_bytes(w, 3, items[i].k, items[i].n) < 0 ? -1
                                                              : enc_value(w, items[i].v, depth + 1);
        }
        if (items != small)
            PyMem_Free(items);
        return rc;
    }
    if (t == &PyList_Type || t == &PyTuple_Type) {
        if (depth >= ENC_MAX_DEPTH) {
            PyErr_SetString(PyExc_ValueError, "nested too deep");
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        if (enc_head(w, 4, (uint64_t)n) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (enc_value(w, PySequence_Fast_GET_ITEM(v, i), depth + 1) < 0)
                return -1;
        return 0;
    }
    if (t == &PyBytes_Type)
        return enc_bytes(w, 2, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d)) {
            PyErr_SetString(PyExc_ValueError, "float");
            return -1;
        }
        uint64_t bits;
        memcpy(&bits, &d, 8);
        if (enc_reserve(w, 9) < 0)
            return -1;
        w->b[w->n++] = 0xFB; /* always 64-bit */
        for (int j = 7; j >= 0; j--)
            w->b[w->n++] = (unsigned char)(bits >> (8 * j));
        return 0;
    }
    if (v == Py_None || v == Py_True || v == Py_False) {
        if (enc_reserve(w, 1) < 0)
            return -1;
        w->b[w->n++] = v == Py_None ? 0xF6 : v == Py_True ? 0xF5 : 0xF4;
        return 0;
    }
    if (T_cid != NULL && t == T_cid) {
        PyObject *buf = *(PyObject **)((char *)v + O_buffer);
        if (buf == NULL || !PyBytes_CheckExact(buf)) {
            PyErr_SetString(PyExc_TypeError, "CID without its bytes");
            return -1;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(buf);
        if (enc_reserve(w, 2) < 0)
            return -1;
        w->b[w->n++] = 0xD8; /* tag 42, then bytes: 0x00 and the binary CID */
        w->b[w->n++] = 0x2A;
        if (enc_head(w, 2, (uint64_t)n + 1) < 0 || enc_reserve(w, n + 1) < 0)
            return -1;
        w->b[w->n++] = 0x00;
        memcpy(w->b + w->n, PyBytes_AS_STRING(buf), (size_t)n);
        w->n += n;
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%.100s", t->tp_name);
    return -1;
}

PyDoc_STRVAR(cbor_encode_doc,
"cbor_encode(value) -> bytes\n"
"\n"
"cbor.encode's bytes for a value of the data model's exact types (dag.cid.CID once\n"
"bind_blocks was called); raises (TypeError, ValueError, OverflowError, ...) for anything\n"
"cbor.encode refuses or this code does not take, and cbor.encode then runs in Python.");

static PyObject *
cbor_encode(PyObject *self, PyObject *value)
{
    unsigned char small[256]; /* the first 256 bytes on the stack: most values are small */
    EncBuf w = {small, 0, sizeof small, 0};
    PyObject *out = NULL;
    if (enc_value(&w, value, 0) == 0)
        out = PyBytes_FromStringAndSize((const char *)w.b, w.n);
    if (w.heap)
        PyMem_Free(w.b);
    return out;
}

/* -- cbor.decode in C: a value only for canonical DAG-CBOR, the bytes cbor._write gives back
 * for it (heads of minimal length, definite lengths, map keys that are strings in canonical
 * order and unique, valid UTF-8, 64-bit finite floats, false/true/null, tag 42 holding 0x00
 * and a CID, nesting below cbor.MAX_DEPTH, nothing after the value). Anything else raises
 * ValueError without saying more, and cbor.decode's Python path runs, whose error names the
 * byte offset or the value's path. The sizes read are checked against the bytes left before
 * anything is allocated, so a short input cannot make a large list or dict. */

typedef struct {
    const unsigned char *b;
    Py_ssize_t n, pos;
    PyObject *links; /* cbor_links: the CIDs go here, and nothing else is made (None stands in) */
} DecBuf;

static PyObject *
dec_fail(const char *why)
{
    PyErr_SetString(PyExc_ValueError, why);
    return NULL;
}

/* The head at d->pos: its major type, additional info and argument (a float's bits for major
 * 7). 0, or -1 for a truncated head, an indefinite or reserved length, a longer head than the
 * argument needs. */
static int
dec_head(DecBuf *d, int *major, int *info, uint64_t *v)
{
    if (d->pos >= d->n) {
        dec_fail("truncated");
        return -1;
    }
    unsigned char first = d->b[d->pos++];
    *major = first >> 5;
    *info = first & 31;
    if (*info < 24) {
        *v = (uint64_t)*info;
        return 0;
    }
    if (*info > 27) {
        dec_fail("indefinite length or reserved info");
        return -1;
    }
    int size = 1 << (*info - 24);
    if (d->n - d->pos < size) {
        dec_fail("truncated");
        return -1;
    }
    uint64_t x = 0;
    for (int j = 0; j < size; j++)
        x = x << 8 | d->b[d->pos + j];
    d->pos += size;
    *v = x;
    if (*major != 7 && x < (size == 1 ? 24 : size == 2 ? 0x100 : size == 4 ? 0x10000
                                                                           : 0x100000000ull)) {
        dec_fail("not the shortest head");
        return -1;
    }
    return 0;
}

/* Whether p[0..n) is UTF-8 that Python's strict decoder takes: no overlong forms, no
 * surrogates, nothing past U+10FFFF (cbor_links checks strings without making them). */
static int
utf8_ok(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int more;
        unsigned char lo = 0x80, hi = 0xBF; /* the range of the first continuation byte */
        if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        }
        else
            return 0;
        if (n - i - 1 < more || p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (int j = 2; j <= more; j++)
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
        i += 1 + more;
    }
    return 1;
}

/* The CID of binary `c` (after tag 42's 0x00): the common 36-byte sha2-256 CIDv1 with a
 * one-byte codec made here, as cid.CID._parse_bytes does; any other through that method. */
static PyObject *
dec_cid(const unsigned char *c, Py_ssize_t len)
{
    if (T_cid == NULL)
        return dec_fail("bind_blocks was not called");
    if (!(len == CID_LEN && c[0] == 1 && c[1] < 0x80 && c[2] == 0x12 && c[3] == 0x20))
        return PyObject_CallMethod((PyObject *)T_cid, "_parse_bytes", "y#", c, len);
    PyObject *buf = PyBytes_FromStringAndSize((const char *)c, CID_LEN);
    PyObject *mh = buf ? PyBytes_FromStringAndSize((const char *)c + 2, CID_LEN - 2) : NULL;
    PyObject *codec = mh ? PyLong_FromLong(c[1]) : NULL;
    PyObject *cid = codec ? T_cid->tp_alloc(T_cid, 0) : NULL;
    if (cid != NULL) {
        put_slot(cid, O_version, INT_ONE);
        put_slot(cid, O_codec, codec);
        put_slot(cid, O_multihash, mh);
        put_slot(cid, O_buffer, buf);
        put_slot(cid, O_str, Py_None);
    }
    Py_XDECREF(codec);
    Py_XDECREF(mh);
    Py_XDECREF(buf);
    return cid;
}

static PyObject *
dec_value(DecBuf *d, int depth)
{
    int major, info;
    uint64_t v;
    if (dec_head(d, &major, &info, &v) < 0)
        return NULL;
    uint64_t left = (uint64_t)(d->n - d->pos);
    if (d->links != NULL && major <= 1)
        return Py_NewRef(Py_None);
    switch (major) {
    case 0:
        return PyLong_FromUnsignedLongLong(v);
    case 1: {
        if (v <= (uint64_t)INT64_MAX)
            return PyLong_FromLongLong(-1 - (long long)v);
        PyObject *u = PyLong_FromUnsignedLongLong(v);
        PyObject *r = u ? PyNumber_Invert(u) : NULL; /* -1 - v */
        Py_XDECREF(u);
        return r;
    }
    case 2:
    case 3: {
        if (v > left)
            return dec_fail("truncated");
        const char *p = (const char *)d->b + d->pos;
        d->pos += (Py_ssize_t)v;
        if (d->links != NULL) {
            if (major == 3 && !utf8_ok((const unsigned char *)p, (Py_ssize_t)v))
                return dec_fail("a string that is not UTF-8");
            return Py_NewRef(Py_None);
        }
        if (major == 2)
            return PyBytes_FromStringAndSize(p, (Py_ssize_t)v);
        return PyUnicode_DecodeUTF8(p, (Py_ssize_t)v, "strict");
    }
    case 4: {
        if (depth >= ENC_MAX_DEPTH)
            return dec_fail("nested too deep");
        if (v > left) /* each item takes a byte at least */
            return dec_fail("truncated");
        if (d->links != NULL) {
            for (uint64_t j = 0; j < v; j++) {
                PyObject *item = dec_value(d, depth + 1);
                if (item == NULL)
                    return NULL;
                Py_DECREF(item);
            }
            return Py_NewRef(Py_None);
        }
        PyObject *list = PyList_New((Py_ssize_t)v);
        if (list == NULL)
            return NULL;
        for (Py_ssize_t j = 0; j < (Py_ssize_t)v; j++) {
            PyObject *item = dec_value(d, depth + 1);
            if (item == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, j, item);
        }
        return list;
    }
    case 5: {
        if (depth >= ENC_MAX_DEPTH)
            return dec_fail("nested too deep");
        if (v > left / 2) /* a key and a value, a byte each at least */
            return dec_fail("truncated");
        PyObject *dict = d->links != NULL ? Py_NewRef(Py_None) : PyDict_New();
        if (dict == NULL)
            return NULL;
        const unsigned char *prev = NULL;
        uint64_t prev_n = 0;
        for (uint64_t j = 0; j < v; j++) {
            int kmajor, kinfo;
            uint64_t kn;
            if (dec_head(d, &kmajor, &kinfo, &kn) < 0)
                goto fail;
            if (kmajor != 3) {
                dec_fail("a map key that is not a string");
                goto fail;
            }
            if (kn > (uint64_t)(d->n - d->pos)) {
                dec_fail("truncated");
                goto fail;
            }
            const unsigned char *k = d->b + d->pos;
            /* canonical order: shorter first, then bytewise; strictly after the last key */
            if (prev != NULL && (kn < prev_n || (kn == prev_n && memcmp(k, prev, kn) <= 0))) {
                dec_fail("map keys out of order or repeated");
                goto fail;
            }
            prev = k;
            prev_n = kn;
            d->pos += (Py_ssize_t)kn;
            if (d->links != NULL) {
                PyObject *value = utf8_ok(k, (Py_ssize_t)kn) ? dec_value(d, depth + 1)
                                                             : dec_fail("a key not UTF-8");
                if (value == NULL)
                    goto fail;
                Py_DECREF(value);
                continue;
            }
            PyObject *key = PyUnicode_DecodeUTF8((const char *)k, (Py_ssize_t)kn, "strict");
            if (key == NULL)
                goto fail;
            PyObject *value = dec_value(d, depth + 1);
            int rc = value == NULL ? -1 : PyDict_SetItem(dict, key, value);
            Py_DECREF(key);
            Py_XDECREF(value);
            if (rc < 0)
                goto fail;
        }
        return dict;
    fail:
        Py_DECREF(dict);
        return NULL;
    }
    case 6: {
        if (v != 42)
            return dec_fail("a tag other than 42");
        int bmajor, binfo;
        uint64_t bn;
        if (dec_head(d, &bmajor, &binfo, &bn) < 0)
            return NULL;
        if (bmajor != 2 || bn == 0 || bn > (uint64_t)(d->n - d->pos) || d->b[d->pos] != 0)
            return dec_fail("tag 42 without a byte string of 0x00 and a CID");
        const unsigned char *c = d->b + d->pos + 1;
        d->pos += (Py_ssize_t)bn;
        PyObject *cid = dec_cid(c, (Py_ssize_t)bn - 1);
        if (cid == NULL || d->links == NULL)
            return cid;
        int rc = PyList_Append(d->links, cid);
        Py_DECREF(cid);
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    default: /* 7 */
        if (info == 20)
            Py_RETURN_FALSE;
        if (info == 21)
            Py_RETURN_TRUE;
        if (info == 22)
            Py_RETURN_NONE;
        if (info == 27) {
            double x;
            memcpy(&x, &v, 8);
            if (!isfinite(x))
                return dec_fail("NaN or an infinity");
            return d->links != NULL ? Py_NewRef(Py_None) : PyFloat_FromDouble(x);
        }
        return dec_fail("a simple value, or a float shorter than 64 bits");
    }
}

PyDoc_STRVAR(cbor_decode_doc,
"cbor_decode(data) -> object\n"
"\n"
"cbor.decode's value for canonical DAG-CBOR bytes (CIDs as dag.cid.CID once bind_blocks\n"
"was called); raises ValueError (or UnicodeDecodeError, CIDError) for anything else, and\n"
"cbor.decode's Python path then says what is wrong and where.");

static PyObject *
cbor_decode(PyObject *self, PyObject *data)
{
    if (bytes_arg(data, "cbor_decode") < 0)
        return NULL;
    DecBuf d = {(const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0, NULL};
    PyObject *value = dec_value(&d, 0);
    if (value != NULL && d.pos != d.n) {
        Py_DECREF(value);
        return dec_fail("bytes after the value");
    }
    return value;
}

PyDoc_STRVAR(cbor_links_doc,
"cbor_links(data) -> list\n"
"\n"
"What cbor_decode checks, without making the value: the CIDs in canonical DAG-CBOR bytes\n"
"(block.iter_links's order); raises as cbor_decode does for anything else.");

static PyObject *
cbor_links(PyObject *self, PyObject *data)
{
    if (bytes_arg(data, "cbor_links") < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    DecBuf d = {(const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0, out};
    PyObject *none = dec_value(&d, 0);
    if (none == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    Py_DECREF(none);
    if (d.pos != d.n) {
        Py_DECREF(out);
        return dec_fail("bytes after the value");
    }
    return out;
}

/* -- block.iter_links in C: every CID in a value, depth-first, in dict and list order. Only
 * exact types are walked (as iter_links does) and no Python code runs while a container is
 * read, so its borrowed items stay valid. */

#define LINKS_MAX_DEPTH 1000 /* about where iter_links's generators hit the recursion limit */

static int
links_walk(PyObject *v, PyObject *out, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == T_cid)
        return PyList_Append(out, v);
    if (t != &PyDict_Type && t != &PyList_Type && t != &PyTuple_Type)
        return 0;
    if (depth >= LINKS_MAX_DEPTH) {
        PyErr_SetString(PyExc_RecursionError, "links: nested too deep");
        return -1;
    }
    if (t == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(v, &pos, &key, &item))
            if (links_walk(item, out, depth + 1) < 0)
                return -1;
        return 0;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
    for (Py_ssize_t i = 0; i < n; i++)
        if (links_walk(PySequence_Fast_GET_ITEM(v, i), out, depth + 1) < 0)
            return -1;
    return 0;
}

PyDoc_STRVAR(links_doc,
"links(value) -> list\n"
"\n"
"list(block.iter_links(value)): the dag.cid.CID objects inside a decoded value, depth-first.");

static PyObject *
links(PyObject *self, PyObject *value)
{
    if (T_cid == NULL)
        return dec_fail("links: bind_blocks was not called");
    PyObject *out = PyList_New(0);
    if (out != NULL && links_walk(value, out, 0) < 0)
        Py_CLEAR(out);
    return out;
}

/* -- signing: Ed25519 through libsodium's crypto_sign_ed25519_detached, the function PyNaCl
 * calls, found by did.py in the libsodium PyNaCl loaded and bound here once (did.py checks
 * that the bound function signs two messages as PyNaCl does before it uses it). */

typedef int (*sign_fn)(unsigned char *sig, unsigned long long *siglen, const unsigned char *m,
                       unsigned long long mlen, const unsigned char *sk);
static sign_fn SIGNER;

PyDoc_STRVAR(bind_signer_doc,
"bind_signer(address)\n"
"\n"
"The address of libsodium's crypto_sign_ed25519_detached (did.py finds it with ctypes in\n"
"the library PyNaCl loaded; 0 unbinds). sign_spliced calls it.");

static PyObject *
bind_signer(PyObject *self, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL && PyErr_Occurred())
        return NULL;
    SIGNER = (sign_fn)p;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sign_spliced_doc,
"sign_spliced(prefix, message, secret) -> bytes\n"
"\n"
"prefix + the 64-byte Ed25519 signature of `message` under libsodium's 64-byte secret key\n"
"`secret` + message, in one allocation (a head's envelope is array(2), bytes(64), the\n"
"signature, then the signed payload's bytes). bind_signer must have been called.");

static PyObject *
sign_spliced(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_ok(nargs, 3, "sign_spliced") < 0)
        return NULL;
    for (int i = 0; i < 3; i++)
        if (!PyBytes_CheckExact(args[i])) {
            PyErr_Format(PyExc_TypeError, "sign_spliced: argument %d must be bytes, not %.100s",
                         i + 1, Py_TYPE(args[i])->tp_name);
            return NULL;
        }
    if (PyBytes_GET_SIZE(args[2]) != 64) {
        PyErr_SetString(PyExc_ValueError, "sign_spliced: the secret key must be 64 bytes");
        return NULL;
    }
    if (SIGNER == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dag._native: bind_signer was not called");
        return NULL;
    }
    Py_ssize_t np = PyBytes_GET_SIZE(args[0]), nm = PyBytes_GET_SIZE(args[1]);
    if (nm > PY_SSIZE_T_MAX - 64 - np)
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, np + 64 + nm);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *m = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    memcpy(o, PyBytes_AS_STRING(args[0]), (size_t)np);
    memcpy(o + np + 64, m, (size_t)nm);
    if (SIGNER(o + np, NULL, m, (unsigned long long)nm,
               (const unsigned char *)PyBytes_AS_STRING(args[2])) != 0) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "sign_spliced: libsodium failed to sign");
        return NULL;
    }
    return out;
}

/* The bucket of n bytes at b with the entry for key k set to `entry`, or Py_None if it is full
 * without k (it overflows: hamt.py builds the child node), or NULL with an exception. */
static PyObject *
bucket_set(const unsigned char *b, Py_ssize_t n, const unsigned char *k, Py_ssize_t klen,
           PyObject *entry)
{
    int count = b[0] - 0x80;
    const unsigned char *ents[BUCKET_SIZE + 1];
    Py_ssize_t elens[BUCKET_SIZE + 1];
    Py_ssize_t pos = 1;
    int m = 0, placed = 0;
    for (int j = 0; j < count; j++) {
        Py_ssize_t start = pos;
        if (pos + 2 > n || b[pos] != 0x82 || (b[pos + 1] >> 5) != 2)
            Py_RETURN_NONE;
        int info = b[pos + 1] & 31;
        Py_ssize_t kl, kp;
        if (info < 24) {
            kl = info;
            kp = pos + 2;
        }
        else if (info == 24 && pos + 3 <= n) {
            kl = b[pos + 2];
            kp = pos + 3;
        }
        else {
            Py_RETURN_NONE;  /* keys are at most 128 bytes */
        }
        if (kp + kl > n)
            Py_RETURN_NONE;
        pos = skip_item(b, n, kp + kl, 0);
        if (pos < 0)
            Py_RETURN_NONE;
        const unsigned char *ek = b + kp;
        int cmp = memcmp(ek, k, (size_t)(kl < klen ? kl : klen));
        if (cmp == 0)
            cmp = kl < klen ? -1 : kl > klen ? 1 : 0;
        if (cmp == 0)
            continue;  /* the old entry of k: replaced */
        if (cmp > 0 && !placed) {
            ents[m++] = NULL;  /* k's entry goes before the first greater key */
            placed = 1;
        }
        if (m >= BUCKET_SIZE + 1)
            Py_RETURN_NONE;
        ents[m] = b + start;
        elens[m] = pos - start;
        m++;
    }
    if (pos != n)
        Py_RETURN_NONE;
    if (!placed)
        ents[m++] = NULL;
    if (m > BUCKET_SIZE)
        Py_RETURN_NONE;
    Py_ssize_t total = 1;
    for (int j = 0; j < m; j++)
        total += ents[j] == NULL ? PyBytes_GET_SIZE(entry) : elens[j];
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    *o++ = (unsigned char)(0x80 + m);
    for (int j = 0; j < m; j++) {
        if (ents[j] == NULL) {
            memcpy(o, PyBytes_AS_STRING(entry), PyBytes_GET_SIZE(entry));
            o += PyBytes_GET_SIZE(entry);
        }
        else {
            memcpy(o, ents[j], elens[j]);
            o += elens[j];
        }
    }
    return out;
}

/* The level's node with `e` as its element r (replacing it if present, else inserted there):
 * its new blob and offs, or -1 with an error set; 1, nothing made, if the node's elements
 * would pass the block limit (hamt.py raises its error). */
static int
splice(const Level *lv, PyObject *e, PyObject **blob, PyObject **offs)
{
    Py_ssize_t old = PyBytes_GET_SIZE(lv->blob), el = PyBytes_GET_SIZE(e);
    Py_ssize_t lo = off_at(lv->offs, lv->r), hi = lv->present ? off_at(lv->offs, lv->r + 1) : lo;
    Py_ssize_t len = old - (hi - lo) + el, d = el - (hi - lo);
    Py_ssize_t m = lv->present ? lv->n : lv->n + 1;
    if (len > MAX_BLOCK)
        return 1;
    *blob = PyBytes_FromStringAndSize(NULL, len);
    *offs = *blob ? PyBytes_FromStringAndSize(NULL, 4 * (m + 1)) : NULL;
    if (*offs == NULL) {
        Py_CLEAR(*blob);
        return -1;
    }
    char *b = PyBytes_AS_STRING(*blob), *ob = PyBytes_AS_STRING(lv->blob);
    memcpy(b, ob, (size_t)lo);
    memcpy(b + lo, PyBytes_AS_STRING(e), (size_t)el);
    memcpy(b + lo + el, ob + hi, (size_t)(old - hi));
    char *o = PyBytes_AS_STRING(*offs);
    memcpy(o, PyBytes_AS_STRING(lv->offs), 4 * (size_t)lv->r);  /* the elements before r */
    uint32_t v = (uint32_t)lo;
    memcpy(o + 4 * lv->r, &v, 4);
    for (Py_ssize_t j = lv->r + 1; j <= m; j++) {  /* those after it, moved by d */
        v = (uint32_t)(off_at(lv->offs, lv->present ? j : j - 1) + d);
        memcpy(o + 4 * j, &v, 4);
    }
    return 0;
}

static int
get_ssize(PyObject *obj, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* hamt._Node's slots, read and set in place at their member descriptors' offsets, as
 * PyMember_GetOne does, rather than through attribute lookup (which finds the descriptor in
 * the type's dict on every access), as bind_blocks does for Block and CID: resolved once per
 * node type. A node of another type takes the generic path. */
typedef struct {
    PyTypeObject *type;  /* a strong reference, so the pointer stays this type's */
    Py_ssize_t bits, blob, offs, p;
} NodeSlots;

static NodeSlots NODE_SLOTS;

/* The slots of node type `type` (slot_offset's kind of member each), or NULL, no error, when
 * it lacks one: its nodes then take the generic path. */
static const NodeSlots *
node_slots(PyTypeObject *type)
{
    if (NODE_SLOTS.type != type) {
        NodeSlots ns = {type, 0, 0, 0, 0};
        if (slot_offset(type, "bits", &ns.bits) < 0 || slot_offset(type, "blob", &ns.blob) < 0 ||
            slot_offset(type, "offs", &ns.offs) < 0 || slot_offset(type, "p", &ns.p) < 0) {
            PyErr_Clear();
            return NULL;
        }
        Py_INCREF(type);
        Py_XDECREF(NODE_SLOTS.type);
        NODE_SLOTS = ns;
    }
    return &NODE_SLOTS;
}

/* The attribute `name` of `node` (slot `off` of ns->type; ns may be NULL), a new reference. */
static PyObject *
node_get(const NodeSlots *ns, PyObject *node, Py_ssize_t off, PyObject *name)
{
    if (ns == NULL || Py_TYPE(node) != ns->type)
        return PyObject_GetAttr(node, name);
    PyObject *v = *(PyObject **)((char *)node + off);
    if (v == NULL) {  /* an unset slot: what the descriptor raises */
        PyErr_SetObject(PyExc_AttributeError, name);
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

/* The node's map as bytes (little-endian, map_bytes long) and its elements, checked: offs
 * rises from 0 to len(blob), one step per element (no element is empty). */
static int
load_level(Level *lv, PyObject *node, const Width *wd, const NodeSlots *ns)
{
    lv->blob = NULL;
    lv->offs = NULL;
    lv->link = NULL;
    PyObject *bits = node_get(ns, node, ns ? ns->bits : 0, S_bits);
    if (bits == NULL)
        return -1;
    if (!PyLong_Check(bits)) {
        Py_DECREF(bits);
        PyErr_SetString(PyExc_TypeError, "a node's bits must be an int");
        return -1;
    }
#if PY_VERSION_HEX >= 0x030D0000
    int rc = _PyLong_AsByteArray((PyLongObject *)bits, lv->map, (size_t)wd->map_bytes, 1, 0, 1);
#else
    int rc = _PyLong_AsByteArray((PyLongObject *)bits, lv->map, (size_t)wd->map_bytes, 1, 0);
#endif
    Py_DECREF(bits);
    if (rc < 0)
        return -1;
    lv->blob = node_get(ns, node, ns ? ns->blob : 0, S_blob);
    if (lv->blob == NULL)
        return -1;
    lv->offs = node_get(ns, node, ns ? ns->offs : 0, S_offs);
    if (lv->offs == NULL)
        return -1;
    Py_ssize_t nb = PyBytes_Check(lv->offs) ? PyBytes_GET_SIZE(lv->offs) : 0;
    if (!PyBytes_Check(lv->blob) || nb < 4 || nb % 4) {
        PyErr_SetString(PyExc_TypeError, "a node's blob and offs must be bytes, offs of uint32s");
        return -1;
    }
    lv->n = nb / 4 - 1;
    Py_ssize_t prev = off_at(lv->offs, 0);
    int ok = prev == 0;
    for (Py_ssize_t j = 1; ok && j <= lv->n; j++) {
        Py_ssize_t at = off_at(lv->offs, j);
        ok = at > prev;
        prev = at;
    }
    if (!ok || prev != PyBytes_GET_SIZE(lv->blob)) {
        PyErr_SetString(PyExc_ValueError, "a node's offs must rise from 0 to len(blob)");
        return -1;
    }
    return 0;
}

/* A _Node: allocated and its slots set as _Node.__init__ sets them, without running the
 * Python __init__. */
static PyObject *
new_node(PyTypeObject *type, const NodeSlots *ns, PyObject *bits, PyObject *blob, PyObject *offs,
         PyObject *p)
{
    PyObject *n = type->tp_alloc(type, 0);
    if (n == NULL)
        return NULL;
    if (ns != NULL && ns->type == type) {  /* the slots tp_alloc zeroed */
        put_slot(n, ns->bits, bits);
        put_slot(n, ns->blob, blob);
        put_slot(n, ns->offs, offs);
        put_slot(n, ns->p, p);
    }
    else if (PyObject_SetAttr(n, S_bits, bits) < 0 || PyObject_SetAttr(n, S_blob, blob) < 0 ||
        PyObject_SetAttr(n, S_offs, offs) < 0 || PyObject_SetAttr(n, S_p, p) < 0) {
        Py_DECREF(n);
        return NULL;
    }
    if (PyObject_IS_GC(n))
        PyObject_GC_UnTrack(n);  /* see nt_check_node */
    return n;
}

/* -- hamt.NodeCache's table: cached nodes by binary CID, least recently used first.
 *
 * An open-addressing index (linear probing, 32-bit slots) over a slab of entries, each with
 * its CID's 64-bit key (key64: for a sha2-256 CID, the digest's last eight bytes), the CID
 * and node objects, the node's weight (hamt.NodeCache._weight) and its neighbours in the
 * LRU list. A lookup reads the index and one entry; OrderedDict's took a dict probe, its
 * own node list and a tuple per entry. hamt.py's _PyNodeTable is the same table in Python
 * (tests/dag/test_dag_native.py runs both through the same operations). */

static uint64_t key64(const unsigned char *b, Py_ssize_t n);

#define NT_EMPTY (-1)
#define NT_DUMMY (-2)

typedef struct {
    uint64_t h;
    PyObject *key;   /* bytes; NULL on the free list */
    PyObject *node;
    long long weight;
    int32_t prev, next;  /* LRU neighbours (-1: none); `next` links the free list */
} NTEntry;

typedef struct {
    PyObject_HEAD
    NTEntry *e;
    Py_ssize_t ecap, elen;  /* slab capacity, entries ever used */
    int32_t free;           /* first free entry (-1: none) */
    int32_t *index;
    Py_ssize_t icap;        /* a power of two */
    Py_ssize_t fill;        /* index slots not empty: live and dummy */
    Py_ssize_t n;           /* live entries */
    int32_t head, tail;     /* least and most recently used */
    Py_ssize_t size;        /* at most this many nodes */
    long long max_bytes, bytes;
} NodeTable;

static PyTypeObject NodeTable_Type;

static int
nt_key(PyObject *key, uint64_t *h)
{
    if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) == 0) {
        PyErr_Format(PyExc_TypeError, "NodeTable: a key must be non-empty bytes, got %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    *h = key64((const unsigned char *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    return 0;
}

/* The index slot holding `key`'s entry, or -1 - (the slot an insert would use). */
static Py_ssize_t
nt_find(NodeTable *t, uint64_t h, PyObject *key)
{
    size_t mask = (size_t)t->icap - 1, i = (size_t)h & mask;
    Py_ssize_t dummy = -1, klen = PyBytes_GET_SIZE(key);
    const char *kb = PyBytes_AS_STRING(key);
    for (;;) {
        int32_t ix = t->index[i];
        if (ix == NT_EMPTY)
            return -1 - (dummy >= 0 ? dummy : (Py_ssize_t)i);
        if (ix == NT_DUMMY) {
            if (dummy < 0)
                dummy = (Py_ssize_t)i;
        }
        else {
            NTEntry *en = &t->e[ix];
            if (en->h == h && (en->key == key || (PyBytes_GET_SIZE(en->key) == klen &&
                                                  memcmp(PyBytes_AS_STRING(en->key), kb,
                                                         (size_t)klen) == 0)))
                return (Py_ssize_t)i;
        }
        i = (i + 1) & mask;
    }
}

static void
nt_unlink(NodeTable *t, int32_t ix)
{
    NTEntry *en = &t->e[ix];
    if (en->prev >= 0)
        t->e[en->prev].next = en->next;
    else
        t->head = en->next;
    if (en->next >= 0)
        t->e[en->next].prev = en->prev;
    else
        t->tail = en->prev;
}

static void
nt_link_last(NodeTable *t, int32_t ix)
{
    NTEntry *en = &t->e[ix];
    en->prev = t->tail;
    en->next = -1;
    if (t->tail >= 0)
        t->e[t->tail].next = ix;
    else
        t->head = ix;
    t->tail = ix;
}

/* Remove the entry at index slot `slot`; its key and node are handed to the caller (to be
 * released once the table is consistent). */
static void
nt_remove(NodeTable *t, Py_ssize_t slot, PyObject **key, PyObject **node)
{
    int32_t ix = t->index[slot];
    NTEntry *en = &t->e[ix];
    t->index[slot] = NT_DUMMY;
    nt_unlink(t, ix);
    *key = en->key;
    *node = en->node;
    t->bytes -= en->weight;
    en->key = en->node = NULL;
    en->next = t->free;
    t->free = ix;
    t->n--;
}

/* The index rebuilt at a capacity that keeps it at most half full (dummies dropped). */
static int
nt_resize(NodeTable *t)
{
    Py_ssize_t cap = 8;
    while (cap < 2 * (t->n + 1))
        cap <<= 1;
    if (cap > ((Py_ssize_t)1 << 30)) {
        PyErr_SetString(PyExc_MemoryError, "NodeTable: too many nodes");
        return -1;
    }
    int32_t *index = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    if (index == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < cap; i++)
        index[i] = NT_EMPTY;
    size_t mask = (size_t)cap - 1;
    for (int32_t ix = t->head; ix >= 0; ix = t->e[ix].next) {
        size_t i = (size_t)t->e[ix].h & mask;
        while (index[i] != NT_EMPTY)
            i = (i + 1) & mask;
        index[i] = ix;
    }
    PyMem_Free(t->index);
    t->index = index;
    t->icap = cap;
    t->fill = t->n;
    return 0;
}

static void
nt_release(PyObject **objs, Py_ssize_t m)
{
    for (Py_ssize_t j = 0; j < m; j++)
        Py_XDECREF(objs[j]);
}

/* `key` -> `node` (a new entry, most recently used; an old entry of `key` goes first), then
 * the least recently used leave while there are more than `size` or `max_bytes`. */
static int
nt_put(NodeTable *t, PyObject *key, uint64_t h, PyObject *node, long long weight)
{
    PyObject *gone[2] = {NULL, NULL};
    Py_ssize_t slot = nt_find(t, h, key);
    if (slot >= 0) {
        nt_remove(t, slot, &gone[0], &gone[1]);
        slot = nt_find(t, h, key);
    }
    Py_ssize_t at = -1 - slot;
    if (t->index[at] == NT_EMPTY && 3 * (t->fill + 1) > 2 * t->icap) {
        if (nt_resize(t) < 0) {
            nt_release(gone, 2);
            return -1;
        }
        at = -1 - nt_find(t, h, key);
    }
    int32_t ix = t->free;
    if (ix >= 0) {
        t->free = t->e[ix].next;
    }
    else {
        if (t->elen == t->ecap) {
            Py_ssize_t cap = t->ecap ? 2 * t->ecap : 64;
            NTEntry *e = cap < ((Py_ssize_t)1 << 30)
                             ? PyMem_Realloc(t->e, (size_t)cap * sizeof(NTEntry))
                             : NULL;
            if (e == NULL) {
                nt_release(gone, 2);
                PyErr_NoMemory();
                return -1;
            }
            t->e = e;
            t->ecap = cap;
        }
        ix = (int32_t)t->elen++;
    }
    if (t->index[at] == NT_EMPTY)
        t->fill++;
    t->index[at] = ix;
    NTEntry *en = &t->e[ix];
    en->h = h;
    Py_INCREF(key);
    Py_INCREF(node);
    en->key = key;
    en->node = node;
    en->weight = weight;
    nt_link_last(t, ix);
    t->n++;
    t->bytes += weight;
    while (t->n > t->size || t->bytes > t->max_bytes) {
        NTEntry *old = &t->e[t->head];
        Py_ssize_t s = nt_find(t, old->h, old->key);
        PyObject *k, *v;
        nt_remove(t, s, &k, &v);
        Py_DECREF(k);  /* released with the table whole: a finalizer may use it */
        Py_DECREF(v);
    }
    nt_release(gone, 2);
    return 0;
}

/* Drop `key`'s entry if there is one: 1 if there was, 0 if not, -1 with an error. */
static int
nt_drop(NodeTable *t, PyObject *key)
{
    uint64_t h;
    if (nt_key(key, &h) < 0)
        return -1;
    Py_ssize_t slot = nt_find(t, h, key);
    if (slot < 0)
        return 0;
    PyObject *gone[2];
    nt_remove(t, slot, &gone[0], &gone[1]);
    nt_release(gone, 2);
    return 1;
}

/* The node of `key`, borrowed, or NULL (no error) if there is none. */
static PyObject *
nt_get(NodeTable *t, PyObject *key, uint64_t h)
{
    Py_ssize_t slot = nt_find(t, h, key);
    return slot < 0 ? NULL : t->e[t->index[slot]].node;
}

/* A node the table may hold: its bits, blob and offs are an int and two bytes objects (offs
 * of uint32s). Such a node is taken out of the cyclic GC's lists: it holds those and its map's
 * _Width, none of which can lead back to it, so it is never part of a cycle, and the tens of
 * thousands of nodes a large map's cache holds then cost the collector nothing. */
static int
nt_check_node(PyObject *node)
{
    PyObject *bits = PyObject_GetAttr(node, S_bits), *blob = NULL, *offs = NULL;
    int ok = bits != NULL && (blob = PyObject_GetAttr(node, S_blob)) != NULL &&
             (offs = PyObject_GetAttr(node, S_offs)) != NULL;
    if (ok) {
        ok = PyLong_CheckExact(bits) && PyBytes_CheckExact(blob) && PyBytes_CheckExact(offs) &&
             PyBytes_GET_SIZE(offs) >= 4 && PyBytes_GET_SIZE(offs) % 4 == 0;
        if (!ok)
            PyErr_SetString(PyExc_TypeError, "NodeTable: a node's bits, blob and offs must be "
                                             "an int, bytes and bytes of uint32s");
    }
    if (ok && PyObject_IS_GC(node))
        PyObject_GC_UnTrack(node);
    Py_XDECREF(bits);
    Py_XDECREF(blob);
    Py_XDECREF(offs);
    return ok ? 0 : -1;
}

static PyObject *
NodeTable_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t size;
    long long max_bytes;
    static char *kwlist[] = {"size", "max_bytes", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nL:NodeTable", kwlist, &size, &max_bytes))
        return NULL;
    if (size < 0 || max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "NodeTable: size and max_bytes must be >= 0");
        return NULL;
    }
    NodeTable *t = (NodeTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->free = t->head = t->tail = -1;
    t->size = size;
    t->max_bytes = max_bytes;
    if (nt_resize(t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void
NodeTable_dealloc(NodeTable *t)
{
    for (Py_ssize_t ix = 0; ix < t->elen; ix++) {
        Py_XDECREF(t->e[ix].key);
        Py_XDECREF(t->e[ix].node);
    }
    PyMem_Free(t->e);
    PyMem_Free(t->index);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static Py_ssize_t
NodeTable_len(NodeTable *t)
{
    return t->n;
}

static PyObject *
NodeTable_get(NodeTable *t, PyObject *key)
{
    uint64_t h;
    if (nt_key(key, &h) < 0)
        return NULL;
    PyObject *node = nt_get(t, key, h);
    return Py_NewRef(node ? node : Py_None);
}

static PyObject *
NodeTable_touch(NodeTable *t, PyObject *key)
{
    uint64_t h;
    if (nt_key(key, &h) < 0)
        return NULL;
    Py_ssize_t slot = nt_find(t, h, key);
    if (slot < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    int32_t ix = t->index[slot];
    nt_unlink(t, ix);
    nt_link_last(t, ix);
    Py_RETURN_NONE;
}

static PyObject *
NodeTable_put(NodeTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t h;
    if (nargs_ok(nargs, 3, "put") < 0)
        return NULL;
    long long weight = PyLong_AsLongLong(args[2]);
    if (weight == -1 && PyErr_Occurred())
        return NULL;
    if (weight < 0) {
        PyErr_SetString(PyExc_ValueError, "NodeTable: a weight must be >= 0");
        return NULL;
    }
    if (nt_key(args[0], &h) < 0 || nt_check_node(args[1]) < 0 ||
        nt_put(t, args[0], h, args[1], weight) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
NodeTable_drop(NodeTable *t, PyObject *key)
{
    int rc = nt_drop(t, key);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

static PyObject *
NodeTable_items(NodeTable *t, PyObject *unused)
{
    PyObject *out = PyList_New(t->n);
    if (out == NULL)
        return NULL;
    Py_ssize_t j = 0;
    for (int32_t ix = t->head; ix >= 0; ix = t->e[ix].next, j++) {
        NTEntry *en = &t->e[ix];
        PyObject *item = Py_BuildValue("(OOL)", en->key, en->node, en->weight);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, item);
    }
    return out;
}

static PyMethodDef NodeTable_methods[] = {
    {"get", (PyCFunction)NodeTable_get, METH_O,
     "get(key): the node of binary CID `key`, or None; the order is kept."},
    {"touch", (PyCFunction)NodeTable_touch, METH_O,
     "touch(key): `key`'s node becomes the most recently used (KeyError if absent)."},
    {"put", (PyCFunction)(void (*)(void))NodeTable_put, METH_FASTCALL,
     "put(key, node, weight): `key` -> `node`, most recently used (an old entry of `key`\n"
     "goes first); then the least recently used leave while there are more than `size`\n"
     "nodes or `max_bytes` of weight. The node leaves the cyclic GC's lists (nt_check_node)."},
    {"drop", (PyCFunction)NodeTable_drop, METH_O,
     "drop(key) -> bool: `key`'s entry removed; whether there was one."},
    {"items", (PyCFunction)NodeTable_items, METH_NOARGS,
     "items() -> [(key, node, weight)], least recently used first."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef NodeTable_members[] = {
    {"bytes", T_LONGLONG, offsetof(NodeTable, bytes), READONLY, "the weight of the nodes held"},
    {"size", T_PYSSIZET, offsetof(NodeTable, size), READONLY, "at most this many nodes"},
    {"max_bytes", T_LONGLONG, offsetof(NodeTable, max_bytes), READONLY, "at most this weight"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods NodeTable_as_sequence = {
    .sq_length = (lenfunc)NodeTable_len,
};

static PyTypeObject NodeTable_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dag._native.NodeTable",
    .tp_basicsize = sizeof(NodeTable),
    .tp_dealloc = (destructor)NodeTable_dealloc,
    .tp_as_sequence = &NodeTable_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "NodeTable(size, max_bytes): hamt.NodeCache's nodes by binary CID, least recently\n"
              "used first, at most `size` nodes and `max_bytes` of weight.",
    .tp_methods = NodeTable_methods,
    .tp_members = NodeTable_members,
    .tp_new = NodeTable_new,
};

/* The table as update_cached_encoded leaves it: the old root and the replaced nodes out, then
 * each (cid, node, weight) of `puts` in. */
static int
table_apply(NodeTable *t, PyObject *root_cid, PyObject *replaced, PyObject *puts)
{
    if (nt_drop(t, root_cid) < 0)
        return -1;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(replaced); j++)
        if (nt_drop(t, PyList_GET_ITEM(replaced, j)) < 0)
            return -1;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(puts); j++) {
        PyObject *put = PyList_GET_ITEM(puts, j), *key = PyTuple_GET_ITEM(put, 0);
        uint64_t h;
        if (nt_key(key, &h) < 0 ||
            nt_put(t, key, h, PyTuple_GET_ITEM(put, 1),
                   PyLong_AsLongLong(PyTuple_GET_ITEM(put, 2))) < 0)
            return -1;
    }
    return 0;
}

PyDoc_STRVAR(hamt_set_doc,
"hamt_set(top, cache, lookup, key, value, node_type, root_prefix, root_suffix, root_cid)\n"
"\n"
"Set one key of a cached HAMT (see hamt.update_cached_encoded). `top` is the root _Node\n"
"(binary CID `root_cid`) in `cache`, a hamt.NodeCache; children are taken from the cache,\n"
"or from `lookup(cid_bytes)` when not there; `key` is the key's bytes and `value` the\n"
"value's DAG-CBOR encoding. Returns (root_block, new_blocks), the new nodes' Blocks deepest\n"
"first, with the cache updated as update_cached_encoded updates it; or None, the cache\n"
"untouched, when the Python path must do it.");

static PyObject *
hamt_set(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_ok(nargs, 9, "hamt_set") < 0)
        return NULL;
    PyObject *top = args[0], *cache = args[1], *lookup = args[2], *key = args[3];
    PyObject *value = args[4], *node_type = args[5], *rpre = args[6], *rsuf = args[7];
    PyObject *root_cid = args[8];
    if (!PyType_Check(node_type)) {
        PyErr_SetString(PyExc_TypeError, "hamt_set: node_type must be a type");
        return NULL;
    }
    if (!PyBytes_Check(key) || !PyBytes_Check(value) || !PyBytes_Check(rpre) ||
        !PyBytes_Check(rsuf) || !PyBytes_Check(root_cid)) {
        PyErr_SetString(PyExc_TypeError,
                        "hamt_set: key, value, affixes and root_cid are bytes");
        return NULL;
    }
    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(key);
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    unsigned char dg[SHA256_DIGEST_LENGTH];  /* the key's hash: its path */
    sha256(k, (size_t)klen, dg);
    /* the bucket entry [key, value]: 0x82, the key as a byte string, the value's encoding */
    unsigned char khead[9];
    int khlen = put_head(khead, 2, (uint64_t)klen);
    PyObject *entry = PyBytes_FromStringAndSize(NULL, 1 + khlen + klen + PyBytes_GET_SIZE(value));
    if (entry == NULL)
        return NULL;
    {
        char *o = PyBytes_AS_STRING(entry);
        o[0] = (char)0x82;
        memcpy(o + 1, khead, (size_t)khlen);
        memcpy(o + 1 + khlen, k, (size_t)klen);
        memcpy(o + 1 + khlen + klen, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
    }

    Width wd;
    Py_ssize_t w, map_bytes;
    const NodeSlots *ns = node_slots((PyTypeObject *)node_type);
    wd.p = node_get(ns, top, ns ? ns->p : 0, S_p);
    if (wd.p == NULL) {
        Py_DECREF(entry);
        return NULL;
    }
    PyObject *prefix = NULL, *result = NULL, *held = NULL, *new_nodes = NULL, *replaced = NULL;
    PyObject *nodes = NULL, *puts = NULL;  /* puts: (cid, node, weight), deepest first */
    PyObject *elem = NULL;
    Level *levels = NULL;
    unsigned char *maps = NULL;
    int depth = 0, nlevels = 0;
    if (get_ssize(wd.p, S_width, &w) < 0 || get_ssize(wd.p, S_map_bytes, &map_bytes) < 0)
        goto done;
    prefix = PyObject_GetAttr(wd.p, S_prefix);
    if (prefix == NULL)
        goto done;
    if (w < 3 || w > MAX_WIDTH || map_bytes != (1 << w) / 8 || !PyBytes_Check(prefix)) {
        PyErr_SetString(PyExc_ValueError, "hamt_set: a bad width");
        goto done;
    }
    nodes = PyObject_GetAttr(cache, S_nodes);
    if (nodes == NULL)
        goto done;
    if (Py_TYPE(nodes) != &NodeTable_Type) {
        PyErr_SetString(PyExc_TypeError, "hamt_set: cache._nodes must be a NodeTable");
        goto done;
    }
    wd.w = (int)w;
    wd.map_bytes = (int)map_bytes;
    wd.prefix = PyBytes_AS_STRING(prefix);
    wd.prefix_len = PyBytes_GET_SIZE(prefix);
    int max_levels = 256 / wd.w;
    levels = PyMem_Calloc((size_t)max_levels, sizeof(Level));
    maps = PyMem_Malloc((size_t)max_levels * (size_t)wd.map_bytes);
    held = PyList_New(0);  /* the child nodes lookup returned, kept alive */
    if (levels == NULL || maps == NULL || held == NULL) {
        if (levels == NULL || maps == NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (int j = 0; j < max_levels; j++)
        levels[j].map = maps + (size_t)j * (size_t)wd.map_bytes;

    /* Down: the key's path; `elem` becomes the new element of the deepest level. */
    PyObject *node = top;
    for (;;) {
        if (depth >= max_levels) {
            result = Py_None;  /* the maximum depth: hamt.py raises its error */
            Py_INCREF(result);
            goto done;
        }
        Level *lv = &levels[depth];
        nlevels = depth + 1;
        if (load_level(lv, node, &wd, ns) < 0)
            goto done;
        lv->i = index_at(dg, wd.w, depth);
        lv->present = lv->map[lv->i >> 3] >> (lv->i & 7) & 1;
        lv->r = rank(lv->map, lv->i);
        if (lv->r > lv->n || (lv->present && lv->r >= lv->n)) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        if (!lv->present) {  /* an empty slot: a bucket of one */
            elem = PyBytes_FromStringAndSize(NULL, 1 + PyBytes_GET_SIZE(entry));
            if (elem == NULL)
                goto done;
            PyBytes_AS_STRING(elem)[0] = (char)0x81;
            memcpy(PyBytes_AS_STRING(elem) + 1, PyBytes_AS_STRING(entry), PyBytes_GET_SIZE(entry));
            break;
        }
        Py_ssize_t at = off_at(lv->offs, lv->r), elen = off_at(lv->offs, lv->r + 1) - at;
        const unsigned char *eb = (const unsigned char *)PyBytes_AS_STRING(lv->blob) + at;
        if (elen == LINK_LEN && memcmp(eb, LINK_PREFIX, 5) == 0) {
            lv->link = PyBytes_FromStringAndSize((const char *)eb + 5, CID_LEN);
            if (lv->link == NULL)
                goto done;
            /* a hit of the right width is used as it is: NodeCache._get would touch it, but
             * every node on the path is replaced, and table_apply drops it before it puts
             * anything (if this call declines, the Python path touches it); anything else
             * goes through lookup, which reads the store or raises */
            PyObject *child = NULL,
                     *hit = nt_get((NodeTable *)nodes, lv->link,
                                   key64((const unsigned char *)eb + 5, CID_LEN));
            if (hit != NULL) {
                PyObject *hp = node_get(ns, hit, ns ? ns->p : 0, S_p);
                if (hp == NULL)
                    goto done;
                Py_DECREF(hp);
                if (hp == wd.p) {
                    child = hit;
                    Py_INCREF(child);
                }
            }
            if (child == NULL)
                child = PyObject_CallOneArg(lookup, lv->link);
            if (child == NULL)
                goto done;
            int rc = PyList_Append(held, child);
            Py_DECREF(child);
            if (rc < 0)
                goto done;
            node = child;
            depth++;
            continue;
        }
        if (eb[0] >= 0x81 && eb[0] <= 0x80 + BUCKET_SIZE) {
            elem = bucket_set(eb, elen, k, klen, entry);
            if (elem == NULL || elem == Py_None) {
                if (elem == Py_None) {
                    result = elem;  /* overflow or unparsable: the Python path */
                    elem = NULL;
                }
                goto done;
            }
            break;
        }
        result = Py_None;  /* another form of link: the Python path */
        Py_INCREF(result);
        goto done;
    }

    /* Up: each node with its new element, hashed and linked from its parent. */
    new_nodes = PyList_New(0);
    replaced = PyList_New(0);
    puts = PyList_New(0);
    if (new_nodes == NULL || replaced == NULL || puts == NULL)
        goto done;
    for (depth = nlevels - 1; depth >= 0; depth--) {
        Level *lv = &levels[depth];
        PyObject *blob = NULL, *offs = NULL;
        int rc = splice(lv, elem, &blob, &offs);
        if (rc != 0) {
            if (rc > 0) {
                result = Py_None;  /* over the block limit: hamt.py raises its error */
                Py_INCREF(result);
            }
            goto done;
        }
        Py_ssize_t elements = lv->present ? lv->n : lv->n + 1, size = PyBytes_GET_SIZE(blob);
        lv->map[lv->i >> 3] |= (unsigned char)(1u << (lv->i & 7));
        PyObject *data = depth ? node_data(&wd, lv->map, elements, blob, "", 0, "", 0)
                               : node_data(&wd, lv->map, elements, blob, PyBytes_AS_STRING(rpre),
                                           PyBytes_GET_SIZE(rpre), PyBytes_AS_STRING(rsuf),
                                           PyBytes_GET_SIZE(rsuf));
        if (data == NULL || data == Py_None) {
            Py_DECREF(blob);
            Py_DECREF(offs);
            if (data == Py_None)
                result = data;  /* over the block limit: hamt.py raises its error */
            goto done;
        }
        PyObject *bits = _PyLong_FromByteArray(lv->map, (size_t)wd.map_bytes, 1, 0);
        PyObject *cid = bits ? cid_of(data) : NULL;
        PyObject *n = cid ? new_node((PyTypeObject *)node_type, ns, bits, blob, offs, wd.p) : NULL;
        Py_XDECREF(bits);
        Py_DECREF(blob);
        Py_DECREF(offs);
        if (n == NULL) {
            Py_XDECREF(cid);
            Py_DECREF(data);
            goto done;
        }
        PyObject *put = Py_BuildValue("(OOL)", cid, n,
                                      WEIGHT_BASE + (long long)WEIGHT_PER_ELEMENT * elements +
                                          (long long)size);
        Py_DECREF(n);
        if (put == NULL || PyList_Append(puts, put) < 0) {
            Py_XDECREF(put);
            Py_DECREF(cid);
            Py_DECREF(data);
            goto done;
        }
        Py_DECREF(put);
        if (depth == 0) {
            /* the cache as update_cached_encoded leaves it: the old root and the replaced
             * nodes out, the new nodes in (deepest first), the new root last */
            if (table_apply((NodeTable *)nodes, root_cid, replaced, puts) < 0) {
                Py_DECREF(cid);
                Py_DECREF(data);
                goto done;
            }
            PyObject *root = make_block(cid, data);
            Py_DECREF(cid);
            Py_DECREF(data);
            if (root != NULL) {
                result = PyTuple_Pack(2, root, new_nodes);
                Py_DECREF(root);
            }
            goto done;
        }
        PyObject *t = make_block(cid, data);
        Py_DECREF(data);
        if (t == NULL || PyList_Append(new_nodes, t) < 0 ||
            PyList_Append(replaced, levels[depth - 1].link) < 0) {
            Py_XDECREF(t);
            Py_DECREF(cid);
            goto done;
        }
        Py_DECREF(t);
        Py_DECREF(elem);
        elem = PyBytes_FromStringAndSize(NULL, LINK_LEN);
        if (elem == NULL) {
            Py_DECREF(cid);
            goto done;
        }
        memcpy(PyBytes_AS_STRING(elem), LINK_PREFIX, 5);
        memcpy(PyBytes_AS_STRING(elem) + 5, PyBytes_AS_STRING(cid), CID_LEN);
        Py_DECREF(cid);
    }

done:
    if (levels != NULL) {
        for (int j = 0; j < nlevels; j++) {
            Py_XDECREF(levels[j].blob);
            Py_XDECREF(levels[j].offs);
            Py_XDECREF(levels[j].link);
        }
        PyMem_Free(levels);
    }
    PyMem_Free(maps);
    Py_XDECREF(elem);
    Py_XDECREF(nodes);
    Py_XDECREF(puts);
    Py_XDECREF(new_nodes);
    Py_XDECREF(replaced);
    Py_XDECREF(held);
    Py_XDECREF(prefix);
    Py_DECREF(wd.p);
    Py_DECREF(entry);
    if (result == NULL && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_SystemError, "hamt_set: no result");
    }
    return result;
}

/* -- store.py's Bloom filter of CIDs (store._Filter): two bit positions from the last eight
 * bytes of a key, read little-endian as h: h & mask and (h >> 32) & mask. */

/* The filter's bits and mask from (bits: bytearray, mask: int); 0, or -1 with an error set. */
static int
filter_bits(PyObject *bits_obj, PyObject *mask_obj, const char *name, unsigned char **bits,
            uint64_t *mask)
{
    if (!PyByteArray_Check(bits_obj)) {
        PyErr_Format(PyExc_TypeError, "%s: bits must be a bytearray", name);
        return -1;
    }
    unsigned long long m = PyLong_AsUnsignedLongLong(mask_obj);
    if (m == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    /* a power of two less one, whose bits fit the bytearray */
    Py_ssize_t nbytes = PyByteArray_GET_SIZE(bits_obj);
    if ((m & (m + 1)) != 0 || m < 7 || (m >> 3) >= (unsigned long long)nbytes) {
        PyErr_Format(PyExc_ValueError, "%s: mask %llu does not fit %zd bytes of bits", name, m,
                     nbytes);
        return -1;
    }
    *bits = (unsigned char *)PyByteArray_AS_STRING(bits_obj);
    *mask = (uint64_t)m;
    return 0;
}

/* (bits, mask, keys): the argument count, then filter_bits. */
static int
bloom_args(PyObject *const *args, Py_ssize_t nargs, const char *name, unsigned char **bits,
           uint64_t *mask)
{
    if (nargs_ok(nargs, 3, name) < 0)
        return -1;
    return filter_bits(args[0], args[1], name, bits, mask);
}

/* A CID's 64-bit key (store._k, unsigned): its last eight bytes read little-endian when it
 * ends in a sha2-256 multihash (0x12 0x20, then the 32-byte digest), else the last eight
 * bytes of the sha2-256 of its bytes. The Bloom filter's bits and idx's key come from it. */
static uint64_t
key64(const unsigned char *b, Py_ssize_t n)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (n < 34 || b[n - 34] != 0x12 || b[n - 33] != 0x20) {
        sha256(b, (size_t)n, digest);
        b = digest;
        n = SHA256_DIGEST_LENGTH;
    }
    uint64_t h = 0;
    for (Py_ssize_t j = n - 1; j >= n - 8; j--)
        h = h << 8 | b[j];
    return h;
}

/* The 64-bit key of `item`: bytes (a CID), or with `rows` also an int (idx's key) or a
 * 1-tuple of either (a row from sqlite3); 0, or -1 with an error set if it is none of those. */
static int
bloom_key(PyObject *item, int rows, const char *name, uint64_t *h)
{
    if (rows && PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 1)
        item = PyTuple_GET_ITEM(item, 0);
    if (PyBytes_Check(item)) {
        *h = key64((const unsigned char *)PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
        return 0;
    }
    if (rows && PyLong_Check(item)) {
        *h = (uint64_t)PyLong_AsUnsignedLongLongMask(item);  /* idx's signed key, as unsigned */
        return *h == (uint64_t)-1 && PyErr_Occurred() ? -1 : 0;
    }
    PyErr_Format(PyExc_TypeError, "%s: a key must be bytes%s, got %.100s", name,
                 rows ? " or an int" : "", Py_TYPE(item)->tp_name);
    return -1;
}

/* The bit positions of a key: h & mask and (h >> 32) & mask. */
static void
bloom_positions(uint64_t h, uint64_t mask, uint64_t *p1, uint64_t *p2)
{
    *p1 = h & mask;
    *p2 = (h >> 32) & mask;
}

PyDoc_STRVAR(bloom_add_doc,
             "bloom_add(bits, mask, keys) -> int\n\n"
             "Set each key's two bits (store._Filter.add) for every key in the iterable `keys`\n"
             "(CIDs as bytes or idx keys as ints, or rows: 1-tuples of either); return how many\n"
             "keys there were.");

static PyObject *
bloom_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char *bits;
    uint64_t mask, h, p1, p2;
    Py_ssize_t count = 0;
    if (bloom_args(args, nargs, "bloom_add", &bits, &mask) < 0)
        return NULL;
    PyObject *it = PyObject_GetIter(args[2]), *item;
    if (it == NULL)
        return NULL;
    while ((item = PyIter_Next(it)) != NULL) {
        int bad = bloom_key(item, 1, "bloom_add", &h);
        Py_DECREF(item);
        if (bad) {
            Py_DECREF(it);
            return NULL;
        }
        bloom_positions(h, mask, &p1, &p2);
        bits[p1 >> 3] |= (unsigned char)(1u << (p1 & 7));
        bits[p2 >> 3] |= (unsigned char)(1u << (p2 & 7));
        count++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(count);
}

PyDoc_STRVAR(bloom_maybe_doc,
             "bloom_maybe(bits, mask, keys) -> list\n\n"
             "The keys of the iterable `keys` (bytes) whose two bits are both set: those the\n"
             "filter may hold (`key in store._Filter`), in order.");

static PyObject *
bloom_maybe(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char *bits;
    uint64_t mask, h, p1, p2;
    if (bloom_args(args, nargs, "bloom_maybe", &bits, &mask) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(args[2]), *item;
    if (it == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        if (bloom_key(item, 0, "bloom_maybe", &h) < 0) {
            Py_DECREF(item);
            break;
        }
        bloom_positions(h, mask, &p1, &p2);
        int hit = (bits[p1 >> 3] >> (p1 & 7) & 1) && (bits[p2 >> 3] >> (p2 & 7) & 1);
        if (hit && PyList_Append(out, item) < 0) {
            Py_DECREF(item);
            break;
        }
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* -- store.py's index merge: a bucket's rows, sorted, as INSERT parameters */

typedef struct {
    PyObject *key; /* references held while the rows are built (an allocation may run a */
    PyObject *id;  /* finalizer, which may change the bucket or entries) */
    int64_t k;     /* idx's key: key64(key) as SQLite's signed integer */
} MergeRow;

static void
merge_rows_free(MergeRow *rows, Py_ssize_t m)
{
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_DECREF(rows[j].key);
        Py_DECREF(rows[j].id);
    }
    PyMem_Free(rows);
}

/* idx order (the signed key), then bytewise: keys that share a 64-bit key stay in a fixed order */
static int
merge_row_cmp(const void *a, const void *b)
{
    const MergeRow *ra = a, *rb = b;
    if (ra->k != rb->k)
        return ra->k < rb->k ? -1 : 1;
    PyObject *x = ra->key, *y = rb->key;
    Py_ssize_t nx = PyBytes_GET_SIZE(x), ny = PyBytes_GET_SIZE(y);
    int c = memcmp(PyBytes_AS_STRING(x), PyBytes_AS_STRING(y), (size_t)(nx < ny ? nx : ny));
    return c ? c : (nx > ny) - (nx < ny);
}

PyDoc_STRVAR(merge_rows_doc,
             "merge_rows(bucket, entries, out) -> int\n\n"
             "The keys of the list `bucket` (CIDs as bytes) that the dict `entries` holds, each\n"
             "once, in idx order (store._k, then bytewise), appended to the list `out` as\n"
             "parameters of the index merge: store._k(key), entries[key], ...; return how many\n"
             "rows (store._merge).");

static PyObject *
merge_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_ok(nargs, 3, "merge_rows") < 0)
        return NULL;
    PyObject *bucket = args[0], *entries = args[1], *out = args[2];
    if (!PyList_CheckExact(bucket) || !PyDict_CheckExact(entries) || !PyList_CheckExact(out)) {
        PyErr_SetString(PyExc_TypeError,
                        "merge_rows: bucket and out must be lists, entries a dict");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(bucket), m = 0;
    MergeRow *rows = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(MergeRow));
    if (rows == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *key = PyList_GET_ITEM(bucket, j);
        if (!PyBytes_CheckExact(key)) {
            PyErr_Format(PyExc_TypeError, "merge_rows: a key must be bytes, got %.100s",
                         Py_TYPE(key)->tp_name);
            merge_rows_free(rows, m);
            return NULL;
        }
        PyObject *id = PyDict_GetItemWithError(entries, key);
        if (id == NULL) {
            if (PyErr_Occurred()) {
                merge_rows_free(rows, m);
                return NULL;
            }
            continue;  /* deleted since it was put */
        }
        Py_INCREF(key);
        Py_INCREF(id);
        rows[m].key = key;
        rows[m].id = id;
        rows[m].k = (int64_t)key64((const unsigned char *)PyBytes_AS_STRING(key),
                                   PyBytes_GET_SIZE(key));
        m++;
    }
    qsort(rows, (size_t)m, sizeof(MergeRow), merge_row_cmp);
    Py_ssize_t added = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (j && merge_row_cmp(&rows[j - 1], &rows[j]) == 0)
            continue;  /* put twice (deleted and put again) */
        PyObject *k = PyLong_FromLongLong(rows[j].k);
        if (k == NULL || PyList_Append(out, k) < 0 || PyList_Append(out, rows[j].id) < 0) {
            Py_XDECREF(k);
            merge_rows_free(rows, m);
            return NULL;
        }
        Py_DECREF(k);
        added++;
    }
    merge_rows_free(rows, m);
    return PyLong_FromSsize_t(added);
}

/* -- store.py's insert of a commit's blocks (SqliteBlockStore._insert), for a put whose
 * blocks the filter says are all new (the common case: a commit's blocks are new) */

#define INSERT_MAX 16 /* store._MULTI_ROWS: one INSERT statement's rows */
#define DATA_LEN_MAX (1LL << 24) /* store._AT_LEN: a block in the data file is shorter */
#define INLINE_MAX 512 /* store.INLINE_MAX: a block of at most this many bytes stays in its row */

/* The CID bytes and data of a Block made by dag.block (bound by bind_blocks), borrowed; 0
 * if it is not one (another type, a slot unset, not bytes). */
static int
block_parts(PyObject *b, PyObject **key, PyObject **data)
{
    if (T_block == NULL || Py_TYPE(b) != T_block)
        return 0;
    PyObject *cid = *(PyObject **)((char *)b + O_cid);
    *data = *(PyObject **)((char *)b + O_data);
    if (cid == NULL || Py_TYPE(cid) != T_cid || *data == NULL || !PyBytes_CheckExact(*data))
        return 0;
    *key = *(PyObject **)((char *)cid + O_buffer);
    return *key != NULL && PyBytes_CheckExact(*key) && PyBytes_GET_SIZE(*key) > 0;
}

PyDoc_STRVAR(insert_rows_doc,
"insert_rows(blocks, bits, mask, first, buf, end, share) -> (args, keys) or None\n"
"\n"
"The INSERT parameters of SqliteBlockStore._insert for `blocks` (a list or tuple of up to 16\n"
"dag.block Blocks), each CID once (the first block of a CID wins): id (first, first + 1,\n"
"...), the CID, then a block of at most 512 bytes' data and 0 (the INSERT stores NULL), a\n"
"larger one's empty bytes and where its data is in the data file, an int:\n"
"its offset times 2**24 plus its length (the data is appended to the bytearray `buf`, whose\n"
"first byte goes to offset `end` of the file). Returns those and the CIDs in that order.\n"
"None (and `buf` as it was) when the Python path must do it: the filter (bits, mask) may\n"
"hold one of the CIDs (the store then checks its memory and idx), there are no blocks or\n"
"more than 16, one is not a dag.block Block or has 2**24 bytes or more. The CID and the data\n"
"are the blocks' own bytes objects if `share` is true (for Sql.run, which binds them in\n"
"place), else bytearray copies (Python's sqlite3 binds those without an adapter lookup).");

static PyObject *
insert_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char *bits;
    uint64_t mask, p1, p2;
    if (nargs_ok(nargs, 7, "insert_rows") < 0)
        return NULL;
    int share = PyObject_IsTrue(args[6]);
    if (share < 0)
        return NULL;
    PyObject *buf = args[4];
    if (!PyByteArray_CheckExact(buf)) {
        PyErr_SetString(PyExc_TypeError, "insert_rows: buf must be a bytearray");
        return NULL;
    }
    long long end = PyLong_AsLongLong(args[5]);
    if (end == -1 && PyErr_Occurred())
        return NULL;
    if (end < 0 || end >= (1LL << 38)) {
        PyErr_SetString(PyExc_ValueError, "insert_rows: end must be in 0 .. 2**38 - 1");
        return NULL;
    }
    PyObject *blocks = args[0];
    if (!PyList_CheckExact(blocks) && !PyTuple_CheckExact(blocks)) {
        PyErr_SetString(PyExc_TypeError, "insert_rows: blocks must be a list or a tuple");
        return NULL;
    }
    if (filter_bits(args[1], args[2], "insert_rows", &bits, &mask) < 0)
        return NULL;
    long long first = PyLong_AsLongLong(args[3]);
    if (first == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(blocks), m = 0;
    if (n == 0 || n > INSERT_MAX)
        Py_RETURN_NONE;
    PyObject *keys[INSERT_MAX], *datas[INSERT_MAX];
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *key, *data;
        if (!block_parts(PySequence_Fast_GET_ITEM(blocks, j), &key, &data) ||
            PyBytes_GET_SIZE(data) >= DATA_LEN_MAX)
            Py_RETURN_NONE;
        const char *kb = PyBytes_AS_STRING(key);
        Py_ssize_t kn = PyBytes_GET_SIZE(key), seen = 0;
        for (Py_ssize_t i = 0; i < m && !seen; i++)
            seen = keys[i] == key || (PyBytes_GET_SIZE(keys[i]) == kn &&
                                      memcmp(PyBytes_AS_STRING(keys[i]), kb, (size_t)kn) == 0);
        if (seen)
            continue;
        bloom_positions(key64((const unsigned char *)kb, kn), mask, &p1, &p2);
        if ((bits[p1 >> 3] >> (p1 & 7) & 1) && (bits[p2 >> 3] >> (p2 & 7) & 1))
            Py_RETURN_NONE;
        keys[m] = key;
        datas[m] = data;
        m++;
    }
    /* borrowed from the blocks' slots, and held from here: an allocation may run a finalizer */
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_INCREF(keys[j]);
        Py_INCREF(datas[j]);
    }
    PyObject *result = NULL, *out = PyList_New(4 * m), *klist = PyList_New(m);
    if (out == NULL || klist == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_INCREF(keys[j]);
        PyList_SET_ITEM(klist, j, keys[j]);
    }
    Py_ssize_t had = PyByteArray_GET_SIZE(buf), total = had;
    for (Py_ssize_t j = 0; j < m; j++)
        if (PyBytes_GET_SIZE(datas[j]) > INLINE_MAX)
            total += PyBytes_GET_SIZE(datas[j]);
    if (end + total >= (1LL << 38)) {
        PyErr_SetString(PyExc_OverflowError, "insert_rows: the data file would pass 2**38 bytes");
        goto done;
    }
    for (Py_ssize_t j = 0, at = had; j < m; j++) {
        Py_ssize_t len = PyBytes_GET_SIZE(datas[j]);
        int inline_ = len <= INLINE_MAX;
        PyObject *id = PyLong_FromLongLong(first + j), *kb, *db;
        if (share) {  /* the empty bytes is a singleton: no allocation */
            kb = id ? Py_NewRef(keys[j]) : NULL;
            db = !kb ? NULL : inline_ ? Py_NewRef(datas[j]) : PyBytes_FromStringAndSize("", 0);
        }
        else {
            kb = id ? PyByteArray_FromStringAndSize(PyBytes_AS_STRING(keys[j]),
                                                    PyBytes_GET_SIZE(keys[j]))
                    : NULL;
            db = kb ? PyByteArray_FromStringAndSize(inline_ ? PyBytes_AS_STRING(datas[j]) : NULL,
                                                    inline_ ? len : 0)
                    : NULL;
        }
        PyObject *loc = !db      ? NULL
                        : inline_ ? PyLong_FromLong(0)
                                  : PyLong_FromLongLong((end + at) * DATA_LEN_MAX + len);
        if (loc == NULL) {
            Py_XDECREF(id);
            Py_XDECREF(kb);
            Py_XDECREF(db);
            goto done;
        }
        PyList_SET_ITEM(out, 4 * j, id);
        PyList_SET_ITEM(out, 4 * j + 1, kb);
        PyList_SET_ITEM(out, 4 * j + 2, db);
        PyList_SET_ITEM(out, 4 * j + 3, loc);
        if (!inline_)
            at += len;
    }
    if (PyByteArray_Resize(buf, total) < 0)
        goto done;
    for (Py_ssize_t j = 0, at = had; j < m; j++) {
        Py_ssize_t len = PyBytes_GET_SIZE(datas[j]);
        if (len <= INLINE_MAX)
            continue;
        memcpy(PyByteArray_AS_STRING(buf) + at, PyBytes_AS_STRING(datas[j]), (size_t)len);
        at += len;
    }
    result = PyTuple_Pack(2, out, klist);
    if (result == NULL)
        PyByteArray_Resize(buf, had); /* shrinking cannot fail */
done:
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_DECREF(keys[j]);
        Py_DECREF(datas[j]);
    }
    Py_XDECREF(out);
    Py_XDECREF(klist);
    return result;
}

PyDoc_STRVAR(insert_record_doc,
"insert_record(keys, first, pending, buckets, log) -> None\n"
"\n"
"SqliteBlockStore._insert's memory after its INSERT of `keys` (CIDs as bytes) with ids first,\n"
"first + 1, ...: each key into the dict `pending` (its id) and onto its merge bucket (the\n"
"list buckets[key[-1] ^ 0x80]), and (None, key, id) onto the undo list `log`.");

static PyObject *
insert_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_ok(nargs, 5, "insert_record") < 0)
        return NULL;
    PyObject *keys = args[0], *pending = args[2], *buckets = args[3], *log = args[4];
    if (!PyList_CheckExact(keys) || !PyDict_CheckExact(pending) || !PyList_CheckExact(buckets) ||
        PyList_GET_SIZE(buckets) != 256 || !PyList_CheckExact(log)) {
        PyErr_SetString(PyExc_TypeError, "insert_record: keys, buckets (256) and log must be "
                                         "lists, pending a dict");
        return NULL;
    }
    long long first = PyLong_AsLongLong(args[1]);
    if (first == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(keys); j++) {
        PyObject *key = PyList_GET_ITEM(keys, j);
        if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) == 0) {
            PyErr_Format(PyExc_TypeError,
                         "insert_record: a key must be non-empty bytes, got %.100s",
                         Py_TYPE(key)->tp_name);
            return NULL;
        }
        unsigned char last = (unsigned char)PyBytes_AS_STRING(key)[PyBytes_GET_SIZE(key) - 1];
        PyObject *bucket = PyList_GET_ITEM(buckets, last ^ 0x80);
        if (!PyList_CheckExact(bucket)) {
            PyErr_SetString(PyExc_TypeError, "insert_record: a bucket must be a list");
            return NULL;
        }
        Py_INCREF(key);  /* held: the calls below may run Python code */
        Py_INCREF(bucket);
        PyObject *id = PyLong_FromLongLong(first + j);
        PyObject *entry = id ? PyTuple_Pack(3, Py_None, key, id) : NULL;
        int rc = entry == NULL || PyDict_SetItem(pending, key, id) < 0 ||
                 PyList_Append(bucket, key) < 0 || PyList_Append(log, entry) < 0;
        Py_XDECREF(entry);
        Py_XDECREF(id);
        Py_DECREF(bucket);
        Py_DECREF(key);
        if (rc)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- SQLite statements bound from C (dag/store.py's INSERTs) ----
 *
 * Python's sqlite3 binds each parameter through an adapter check and copies every blob
 * (SQLITE_TRANSIENT: a malloc, a memcpy, and a free at the next bind); a commit binds some
 * 30. Here the store's statements are prepared once and bound in place (SQLITE_STATIC: the
 * objects are held, and no Python code runs, until the step and reset are done; the GIL stays
 * held, as the statements are short and run in the store's own write transaction), on the
 * connection Python's sqlite3 opened. The functions are those of the SQLite library Python's
 * _sqlite3 loaded (store.py finds them with ctypes; sql_bind); the connection's handle is
 * given by SQLite itself: an auto-extension hook, which SQLite calls with every connection
 * it opens, keeps the newest one opened on this thread, and Sql() takes it right after
 * sqlite3.connect. No header or link to SQLite is needed: these are the stable C API's
 * signatures. */

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
#define SQ_OK 0
#define SQ_NOMEM 7
#define SQ_CONSTRAINT 19
#define SQ_MISMATCH 20
#define SQ_CORRUPT 11
#define SQ_NOTADB 26
#define SQ_ROW 100
#define SQ_DONE 101
#define SQ_PREPARE_PERSISTENT 0x01

static struct {
    int (*auto_extension)(void (*)(void));
    int (*prepare_v3)(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **,
                      const char **);
    int (*bind_parameter_count)(sqlite3_stmt *);
    int (*bind_int64)(sqlite3_stmt *, int, long long);
    int (*bind_blob)(sqlite3_stmt *, int, const void *, int, void (*)(void *));
    int (*bind_null)(sqlite3_stmt *, int);
    int (*step)(sqlite3_stmt *);
    int (*reset)(sqlite3_stmt *);
    int (*clear_bindings)(sqlite3_stmt *);
    int (*finalize)(sqlite3_stmt *);
    const char *(*errmsg)(sqlite3 *);
    int (*extended_errcode)(sqlite3 *);
    const char *(*db_filename)(sqlite3 *, const char *);
} SQ;
#define SQ_FUNCTIONS 13
static PyObject *SQ_ERRORS; /* (DatabaseError, OperationalError, IntegrityError) */
static _Thread_local sqlite3 *SQ_OPENED;

/* SQLite's auto-extension entry point: called inside sqlite3_open_v2, on the opening thread. */
static int
sq_opened(sqlite3 *db, const char **err, const void *api)
{
    (void)err;
    (void)api;
    SQ_OPENED = db;
    return SQ_OK;
}

PyDoc_STRVAR(sql_bind_doc,
"sql_bind(addresses, errors)\n"
"\n"
"The addresses of the SQLite functions named in SQLITE_FUNCTIONS, in that order, in the\n"
"library Python's _sqlite3 loaded (store.py finds them with ctypes), and sqlite3's\n"
"(DatabaseError, OperationalError, IntegrityError) for the errors Sql.run raises. The first\n"
"call registers the hook that keeps each new connection's handle for Sql(); a later call\n"
"changes nothing.");

static PyObject *
sql_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_ok(nargs, 2, "sql_bind") < 0)
        return NULL;
    PyObject *a = args[0], *errors = args[1];
    if (!PyTuple_CheckExact(a) || PyTuple_GET_SIZE(a) != SQ_FUNCTIONS) {
        PyErr_Format(PyExc_TypeError, "sql_bind: addresses must be a tuple of %d ints",
                     SQ_FUNCTIONS);
        return NULL;
    }
    if (!PyTuple_CheckExact(errors) || PyTuple_GET_SIZE(errors) != 3) {
        PyErr_SetString(PyExc_TypeError, "sql_bind: errors must be a tuple of 3 classes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 3; i++)
        if (!PyExceptionClass_Check(PyTuple_GET_ITEM(errors, i))) {
            PyErr_SetString(PyExc_TypeError, "sql_bind: errors must be exception classes");
            return NULL;
        }
    void *p[SQ_FUNCTIONS];
    for (Py_ssize_t i = 0; i < SQ_FUNCTIONS; i++) {
        p[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(a, i));
        if (p[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "sql_bind: address %zd is 0", i);
            return NULL;
        }
    }
    if (SQ.auto_extension != NULL)  /* bound before (dag.store imported again): kept */
        Py_RETURN_NONE;
    SQ.prepare_v3 = (int (*)(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **,
                             const char **))p[1];
    SQ.bind_parameter_count = (int (*)(sqlite3_stmt *))p[2];
    SQ.bind_int64 = (int (*)(sqlite3_stmt *, int, long long))p[3];
    SQ.bind_blob = (int (*)(sqlite3_stmt *, int, const void *, int, void (*)(void *)))p[4];
    SQ.bind_null = (int (*)(sqlite3_stmt *, int))p[5];
    SQ.step = (int (*)(sqlite3_stmt *))p[6];
    SQ.reset = (int (*)(sqlite3_stmt *))p[7];
    SQ.clear_bindings = (int (*)(sqlite3_stmt *))p[8];
    SQ.finalize = (int (*)(sqlite3_stmt *))p[9];
    SQ.errmsg = (const char *(*)(sqlite3 *))p[10];
    SQ.extended_errcode = (int (*)(sqlite3 *))p[11];
    SQ.db_filename = (const char *(*)(sqlite3 *, const char *))p[12];
    int (*auto_extension)(void (*)(void)) = (int (*)(void (*)(void)))p[0];
    int rc = auto_extension((void (*)(void))sq_opened);
    if (rc != SQ_OK) {
        PyErr_Format(PyExc_RuntimeError, "sql_bind: sqlite3_auto_extension failed (%d)", rc);
        return NULL;
    }
    SQ.auto_extension = auto_extension;
    Py_INCREF(errors);
    Py_XSETREF(SQ_ERRORS, errors);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sql_expect_doc,
"sql_expect()\n"
"\n"
"Forget the handle of the last connection opened on this thread: call it before\n"
"sqlite3.connect, then Sql() takes the handle of the connection that call opened.");

static PyObject *
sql_expect(PyObject *self, PyObject *unused)
{
    SQ_OPENED = NULL;
    Py_RETURN_NONE;
}

#define SQL_MAX_STMTS 256

typedef struct {
    PyObject_HEAD
    sqlite3 *db;           /* NULL once closed */
    PyObject *index;       /* dict: SQL text -> its statement's index in stmts */
    sqlite3_stmt *stmts[SQL_MAX_STMTS];
    int n;
} Sql;

static void
sql_finalize_all(Sql *s)
{
    for (int i = 0; i < s->n; i++)
        SQ.finalize(s->stmts[i]);
    s->n = 0;
    s->db = NULL;
    if (s->index != NULL)
        PyDict_Clear(s->index);
}

/* The current error of `db` as an exception of sqlite3's, chosen by the primary code much as
 * sqlite3 chooses: IntegrityError for SQLITE_CONSTRAINT and SQLITE_MISMATCH, MemoryError for
 * SQLITE_NOMEM, OperationalError for the other codes up to SQLITE_SCHEMA but SQLITE_CORRUPT,
 * else DatabaseError; the extended code as its sqlite_errorcode. */
static void
sql_error(sqlite3 *db, const char *what)
{
    int code = SQ.extended_errcode(db), primary = code & 0xff;
    if (primary == SQ_NOMEM) {
        PyErr_NoMemory();
        return;
    }
    PyObject *cls = PyTuple_GET_ITEM(SQ_ERRORS, 0);
    if (primary == SQ_CONSTRAINT || primary == SQ_MISMATCH)
        cls = PyTuple_GET_ITEM(SQ_ERRORS, 2);
    else if (primary != SQ_CORRUPT && primary != SQ_NOTADB && primary <= 17)
        cls = PyTuple_GET_ITEM(SQ_ERRORS, 1); /* SQLITE_ERROR .. SQLITE_SCHEMA */
    PyObject *msg = PyUnicode_FromFormat("%s: %s", what, SQ.errmsg(db));
    if (msg == NULL)
        return;
    PyObject *e = PyObject_CallOneArg(cls, msg);
    Py_DECREF(msg);
    if (e == NULL)
        return;
    PyObject *c = PyLong_FromLong(code);
    if (c == NULL || PyObject_SetAttrString(e, "sqlite_errorcode", c) < 0) {
        Py_XDECREF(c);
        Py_DECREF(e);
        return;
    }
    Py_DECREF(c);
    PyErr_SetObject(cls, e);
    Py_DECREF(e);
}

static PyObject *
Sql_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    const char *path;
    static char *kwlist[] = {"path", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s:Sql", kwlist, &path))
        return NULL;
    if (SQ.auto_extension == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dag._native: sql_bind was not called");
        return NULL;
    }
    sqlite3 *db = SQ_OPENED;
    if (db == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Sql: no connection was opened on this thread since sql_expect()");
        return NULL;
    }
    SQ_OPENED = NULL;
    const char *name = SQ.db_filename(db, "main");
    if (name == NULL || strcmp(name, path) != 0) {
        PyErr_Format(PyExc_ValueError, "Sql: the connection opened is %s, not %s",
                     name ? name : "(no file)", path);
        return NULL;
    }
    Sql *s = (Sql *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->index = PyDict_New();
    if (s->index == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    s->db = db;
    return (PyObject *)s;
}

static void
Sql_dealloc(Sql *s)
{
    sql_finalize_all(s);
    Py_XDECREF(s->index);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* The prepared statement of `sql` (prepared at its first use), or NULL with an exception. */
static sqlite3_stmt *
sql_stmt(Sql *s, PyObject *sql)
{
    PyObject *at = PyDict_GetItemWithError(s->index, sql);
    if (at != NULL)
        return s->stmts[PyLong_AsLong(at)];
    if (PyErr_Occurred())
        return NULL;
    if (s->n == SQL_MAX_STMTS) {
        PyErr_SetString(PyExc_OverflowError, "Sql.run: too many distinct statements");
        return NULL;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(sql, &len);
    if (text == NULL)
        return NULL;
    if (len > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "Sql.run: the statement is too long");
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (SQ.prepare_v3(s->db, text, (int)len + 1, SQ_PREPARE_PERSISTENT, &st, &tail) != SQ_OK) {
        sql_error(s->db, "Sql.run: prepare");
        return NULL;
    }
    if (st == NULL || (tail != NULL && *tail != '\0')) {
        if (st != NULL)
            SQ.finalize(st);
        PyErr_SetString(PyExc_ValueError, "Sql.run: the text must be one statement");
        return NULL;
    }
    PyObject *i = PyLong_FromLong(s->n);
    if (i == NULL || PyDict_SetItem(s->index, sql, i) < 0) {
        Py_XDECREF(i);
        SQ.finalize(st);
        return NULL;
    }
    Py_DECREF(i);
    s->stmts[s->n++] = st;
    return st;
}

PyDoc_STRVAR(Sql_run_doc,
"run(sql, params, start, stop)\n"
"\n"
"Execute the statement `sql` (prepared at its first use, then kept) with the parameters\n"
"params[start:stop] (a list of int, bytes, bytearray or None; as many as it has), on the\n"
"connection. Its rows, if any, are discarded. An SQLite error raises one of sqlite3's\n"
"exceptions, chosen by its code much as sqlite3 chooses (sql_error); the statement is reset\n"
"and its parameters cleared either way.");

static PyObject *
Sql_run(Sql *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs_ok(nargs, 4, "Sql.run") < 0)
        return NULL;
    if (s->db == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sql.run: closed");
        return NULL;
    }
    PyObject *sql = args[0], *params = args[1];
    if (!PyUnicode_CheckExact(sql) || !PyList_CheckExact(params)) {
        PyErr_SetString(PyExc_TypeError, "Sql.run: sql must be a str and params a list");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]), stop = PyLong_AsSsize_t(args[3]);
    if ((start == -1 || stop == -1) && PyErr_Occurred())
        return NULL;
    if (start < 0 || stop < start || stop > PyList_GET_SIZE(params)) {
        PyErr_Format(PyExc_IndexError, "Sql.run: %zd:%zd is not a slice of %zd parameters",
                     start, stop, PyList_GET_SIZE(params));
        return NULL;
    }
    sqlite3_stmt *st = sql_stmt(s, sql);
    if (st == NULL)
        return NULL;
    int want = SQ.bind_parameter_count(st);
    if (stop - start != want) {
        PyErr_Format(PyExc_ValueError, "Sql.run: the statement has %d parameters, %zd given",
                     want, stop - start);
        return NULL;
    }
    /* the list and its items are held, and no Python code runs, until the reset below */
    Py_INCREF(params);
    PyObject *result = NULL;
    int rc = SQ_OK;
    for (Py_ssize_t j = start; j < stop && rc == SQ_OK; j++) {
        PyObject *v = PyList_GET_ITEM(params, j);
        int col = (int)(j - start + 1);
        if (PyLong_CheckExact(v)) {
            long long x = PyLong_AsLongLong(v);
            if (x == -1 && PyErr_Occurred())
                goto done;
            rc = SQ.bind_int64(st, col, x);
        }
        else if (PyBytes_CheckExact(v) || PyByteArray_CheckExact(v)) {
            int bytes = PyBytes_CheckExact(v);
            Py_ssize_t n = bytes ? PyBytes_GET_SIZE(v) : PyByteArray_GET_SIZE(v);
            if (n > INT_MAX) {
                PyErr_SetString(PyExc_OverflowError, "Sql.run: a blob is too large");
                goto done;
            }
            rc = SQ.bind_blob(st, col, bytes ? PyBytes_AS_STRING(v) : PyByteArray_AS_STRING(v),
                              (int)n, NULL /* SQLITE_STATIC */);
        }
        else if (v == Py_None)
            rc = SQ.bind_null(st, col);
        else {
            PyErr_Format(PyExc_TypeError,
                         "Sql.run: parameter %zd is %.100s, not int, bytes, bytearray or None",
                         j, Py_TYPE(v)->tp_name);
            goto done;
        }
    }
    if (rc != SQ_OK) {
        sql_error(s->db, "Sql.run: bind");
        goto done;
    }
    do
        rc = SQ.step(st);
    while (rc == SQ_ROW);
    if (rc != SQ_DONE) {
        sql_error(s->db, "Sql.run");
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    SQ.reset(st);
    SQ.clear_bindings(st);
    Py_DECREF(params);
    return result;
}

static PyObject *
Sql_close(Sql *s, PyObject *unused)
{
    sql_finalize_all(s);
    Py_RETURN_NONE;
}

static PyMethodDef Sql_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Sql_run, METH_FASTCALL, Sql_run_doc},
    {"close", (PyCFunction)Sql_close, METH_NOARGS,
     "close(): finalize the statements (before the connection closes); run raises after."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Sql_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dag._native.Sql",
    .tp_basicsize = sizeof(Sql),
    .tp_dealloc = (destructor)Sql_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sql(path): statements bound from C on the connection sqlite3.connect opened on\n"
              "this thread since sql_expect(), whose main database must be the file `path`\n"
              "(as SQLite names it: absolute, links resolved).",
    .tp_methods = Sql_methods,
    .tp_new = Sql_new,
};

static PyMethodDef methods[] = {
    {"hamt_set", (PyCFunction)(void (*)(void))hamt_set, METH_FASTCALL, hamt_set_doc},
    {"bloom_add", (PyCFunction)(void (*)(void))bloom_add, METH_FASTCALL, bloom_add_doc},
    {"bloom_maybe", (PyCFunction)(void (*)(void))bloom_maybe, METH_FASTCALL, bloom_maybe_doc},
    {"merge_rows", (PyCFunction)(void (*)(void))merge_rows, METH_FASTCALL, merge_rows_doc},
    {"insert_rows", (PyCFunction)(void (*)(void))insert_rows, METH_FASTCALL, insert_rows_doc},
    {"insert_record", (PyCFunction)(void (*)(void))insert_record, METH_FASTCALL,
     insert_record_doc},
    {"bind_blocks", (PyCFunction)(void (*)(void))bind_blocks, METH_FASTCALL, bind_blocks_doc},
    {"spliced", (PyCFunction)spliced, METH_O, spliced_doc},
    {"bind_signer", (PyCFunction)bind_signer, METH_O, bind_signer_doc},
    {"cbor_encode", (PyCFunction)cbor_encode, METH_O, cbor_encode_doc},
    {"cbor_decode", (PyCFunction)cbor_decode, METH_O, cbor_decode_doc},
    {"cbor_links", (PyCFunction)cbor_links, METH_O, cbor_links_doc},
    {"links", (PyCFunction)links, METH_O, links_doc},
    {"sign_spliced", (PyCFunction)(void (*)(void))sign_spliced, METH_FASTCALL, sign_spliced_doc},
    {"sql_bind", (PyCFunction)(void (*)(void))sql_bind, METH_FASTCALL, sql_bind_doc},
    {"sql_expect", (PyCFunction)sql_expect, METH_NOARGS, sql_expect_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dag._native",
    "A commit's hot paths in C: a HAMT set (hamt.update_cached_encoded) and the node cache's\n"
    "table (NodeTable), spliced blocks (block.Block._spliced), and the block store's Bloom\n"
    "filter (store._Filter), index merge rows (store._merge) and insert of new blocks\n"
    "(store._insert) with their statements bound on the store's connection (Sql),\n"
    "cbor.encode and cbor.decode (cbor_encode, cbor_decode, cbor_links),\n"
    "and a head's signature spliced into its\n"
    "envelope (did.Keypair.sign_spliced).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (!(S_bits = PyUnicode_InternFromString("bits")) ||
        !(S_blob = PyUnicode_InternFromString("blob")) ||
        !(S_offs = PyUnicode_InternFromString("offs")) ||
        !(S_p = PyUnicode_InternFromString("p")) ||
        !(S_width = PyUnicode_InternFromString("width")) ||
        !(S_map_bytes = PyUnicode_InternFromString("map_bytes")) ||
        !(S_prefix = PyUnicode_InternFromString("prefix")) ||
        !(S_nodes = PyUnicode_InternFromString("_nodes")))
        return NULL;
    if (PyType_Ready(&NodeTable_Type) < 0 || PyType_Ready(&Sql_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module), *names = NULL;
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "NodeTable", (PyObject *)&NodeTable_Type) < 0 ||
        PyModule_AddObjectRef(m, "Sql", (PyObject *)&Sql_Type) < 0 ||
        (names = Py_BuildValue("(sssssssssssss)", "sqlite3_auto_extension",
                               "sqlite3_prepare_v3", "sqlite3_bind_parameter_count",
                               "sqlite3_bind_int64", "sqlite3_bind_blob", "sqlite3_bind_null",
                               "sqlite3_step", "sqlite3_reset", "sqlite3_clear_bindings",
                               "sqlite3_finalize", "sqlite3_errmsg", "sqlite3_extended_errcode",
                               "sqlite3_db_filename")) == NULL ||
        PyModule_AddObjectRef(m, "SQLITE_FUNCTIONS", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(names);
    return m;
}
