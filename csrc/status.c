#include "rotortree.h"

const char *rt_strerror(int status)
{
    switch (status) {
    case RT_OK: return "ok";
    case RT_ERR_INVALID_ARGUMENT: return "invalid argument";
    case RT_ERR_INVALID_LEAF: return "leaves must be a whole number of 32-byte values";
    case RT_ERR_EMPTY_BATCH: return "empty batch: at least one leaf is needed";
    case RT_ERR_MAX_DEPTH: return "the tree is full: the insert would exceed arity**max_depth leaves";
    case RT_ERR_INDEX: return "index out of range";
    case RT_ERR_NOMEM: return "out of memory";
    case RT_ERR_BUSY: return "the thread pool is busy: reconfigure when no parallel work is running";
    case RT_ERR_UNSUPPORTED: return "the SIMD kernel is not supported by this CPU or build";
    case RT_ERR_THREAD: return "a thread operation failed";
    case RT_ERR_EMPTY_TREE: return "the tree is empty";
    case RT_ERR_INVALID_PROOF: return "the proof is malformed or does not verify";
    case RT_ERR_NO_INDEX: return "the tree has no leaf index (enable it first)";
    case RT_ERR_DUPLICATE: return "a leaf is already in the tree or repeated in the batch";
    case RT_ERR_IO: return "a file write failed";
    default: return "unknown status";
    }
}
