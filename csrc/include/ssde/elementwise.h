/*
 * The strided elementwise engine shared by every pointwise kernel.
 *
 * Operand 0 is the output; all operands have the output's shape (inputs that
 * broadcast carry zero strides, set up by the caller). The engine merges
 * dimensions that are contiguous for every operand, splits the work into
 * blocks of one inner row (or a piece of one), and runs the blocks on an
 * OpenMP team. The inner function sees byte strides and a pointer per operand.
 */
#ifndef SSDE_ELEMENTWISE_H
#define SSDE_ELEMENTWISE_H

#include "ssde/ssde.h"

#define SSDE_MAX_OPERANDS 8

typedef void (*ssde_inner_fn)(int64_t n, char *const *ptrs, const int64_t *byte_strides,
                              const void *params);

/* Runs fn over every element. Returns SSDE_ERR_SHAPE if the shapes differ. */
int ssde_elementwise(int nops, const ssde_tensor *ops, ssde_inner_fn fn, const void *params);

#endif
