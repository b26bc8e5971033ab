// The revision is a C macro because SwiftPM passes defines to C compilers
// (-Xcc -D…) but has no way to hand a string to Swift code; a release build
// sets it and nothing in the source tree changes.
#include "LarderBuildInfo.h"

#define LARDER_STRINGIFY_TOKENS(tokens) #tokens
#define LARDER_STRINGIFY(macro) LARDER_STRINGIFY_TOKENS(macro)

const char *larder_build_revision(void) {
#ifdef LARDER_GIT_REVISION
    return LARDER_STRINGIFY(LARDER_GIT_REVISION);
#else
    return "unknown";
#endif
}
