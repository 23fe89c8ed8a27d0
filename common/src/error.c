#include "cm/error.h"

const char *cm_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define CM__ERR_MSG(name, num, msg)                                                                \
    case CM_##name:                                                                                \
        return msg;
        CM_ERRNO_MAP(CM__ERR_MSG)
#undef CM__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *cm_errname(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define CM__ERR_NAME(name, num, msg)                                                               \
    case CM_##name:                                                                                \
        return "CM_" #name;
        CM_ERRNO_MAP(CM__ERR_NAME)
#undef CM__ERR_NAME
    default:
        return "CM_EUNKNOWN";
    }
}
