/* Binding of the composite kernels. */
#include "arg.h"

PyMethodDef ssde_composite_methods[] = {
    {NULL, NULL, 0, NULL},
};
