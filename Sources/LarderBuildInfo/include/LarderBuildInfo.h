#ifndef LARDER_BUILD_INFO_H
#define LARDER_BUILD_INFO_H

/// The git revision this binary was built from, as the release build passed it
/// (`-Xcc -DLARDER_GIT_REVISION=<revision>`), or "unknown" for other builds.
const char *larder_build_revision(void);

#endif
