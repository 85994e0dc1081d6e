// libuv, as a system library. The Linux helpers that are not libuv's are
// in the CLinux target, so that the client library and ivctl do not link
// libuv.
#ifndef IVSERVER_CLIBUV_SHIM_H
#define IVSERVER_CLIBUV_SHIM_H

#include <uv.h>

#endif
