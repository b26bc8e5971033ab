// Headers only (see include/LoadGeneratorSystem.h); a C target needs a source file.
#include "LoadGeneratorSystem.h"
