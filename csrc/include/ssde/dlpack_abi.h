/*
 * DLPack ABI, written by hand from the DLPack specification (v1.0/1.1,
 * https://dmlc.github.io/dlpack/latest/c_api.html). Only what a consumer of
 * CPU tensors needs. Field order matters: the legacy DLManagedTensor has the
 * DLTensor first, the versioned one has it last.
 */
#ifndef SSDE_DLPACK_ABI_H
#define SSDE_DLPACK_ABI_H

#include <stddef.h>
#include <stdint.h>

#define SSDE_DLPACK_MAJOR 1
#define SSDE_DLPACK_MINOR 0

#define SSDE_DLPACK_FLAG_READ_ONLY (UINT64_C(1) << 0)
#define SSDE_DLPACK_FLAG_IS_COPIED (UINT64_C(1) << 1)

typedef enum {
    kDLCPU = 1,
    kDLCUDA = 2,
    kDLCUDAHost = 3,
    kDLOpenCL = 4,
    kDLVulkan = 7,
    kDLMetal = 8,
    kDLVPI = 9,
    kDLROCM = 10,
    kDLROCMHost = 11,
    kDLExtDev = 12,
    kDLCUDAManaged = 13,
    kDLOneAPI = 14,
} DLDeviceType;

typedef struct {
    int32_t device_type; /* DLDeviceType */
    int32_t device_id;
} DLDevice;

typedef enum {
    kDLInt = 0,
    kDLUInt = 1,
    kDLFloat = 2,
    kDLOpaqueHandle = 3,
    kDLBfloat = 4,
    kDLComplex = 5,
    kDLBool = 6,
} DLDataTypeCode;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL means compact row-major */
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

/* Layout checks against the specification (64-bit platforms). */
_Static_assert(sizeof(DLDataType) == 4, "DLDataType is 4 bytes");
_Static_assert(offsetof(DLManagedTensor, dl_tensor) == 0, "legacy: tensor first");
_Static_assert(offsetof(DLManagedTensorVersioned, version) == 0, "versioned: version first");
_Static_assert(sizeof(void *) != 8 || offsetof(DLManagedTensorVersioned, dl_tensor) == 32,
               "versioned: tensor after version, ctx, deleter, flags");
_Static_assert(sizeof(void *) != 8 || sizeof(DLTensor) == 48, "DLTensor is 48 bytes");

#endif
