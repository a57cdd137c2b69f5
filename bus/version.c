/* The library's version at run time, against the header's at build time. */
#include "internal.h"

CBUS_API const char *cbus_version(void)
{
    return CBUS_VERSION_STRING;
}

CBUS_API unsigned cbus_version_number(void)
{
    return CBUS_VERSION_NUMBER;
}
