// The helpers are static inline in include/CLinux.h; this file gives the
// C target the source SwiftPM needs.
#include "CLinux.h"
