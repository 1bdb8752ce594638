/*
 * sarai_llama._cpuid: the running CPU's ISA extensions, asked of the CPU itself.
 *
 * The import-time guard of native builds cannot trust /proc/cpuinfo alone: under
 * emulation (qemu-user) and in some containers it describes the host, not the
 * CPU the code runs on. This module is compiled for baseline x86-64, outside
 * the native build's -march flags, so it runs on any x86-64 CPU. Names follow
 * Linux's /proc/cpuinfo; a feature counts only if the OS also saves its
 * register state (XCR0), as the kernel does before it lists the flag.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <stdint.h>

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

struct bit {
    const char *name;
    int reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
    int bit;
};

static int add(PyObject *list, const char *name) {
    PyObject *s = PyUnicode_FromString(name);
    if (!s) return -1;
    int rc = PyList_Append(list, s);
    Py_DECREF(s);
    return rc;
}

static int add_bits(PyObject *list, const unsigned int regs[4], const struct bit *bits, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if ((regs[bits[i].reg] >> bits[i].bit) & 1u)
            if (add(list, bits[i].name) < 0) return -1;
    return 0;
}

static PyObject *features(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    unsigned int r[4] = {0, 0, 0, 0};
    const unsigned int max_leaf = __get_cpuid_max(0, NULL);

    __cpuid(1, r[0], r[1], r[2], r[3]);
    const int osxsave = (r[2] >> 27) & 1u;
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const int os_avx = (xcr0 & 0x6) == 0x6;
    const int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
    const int os_amx = (xcr0 & 0x60000) == 0x60000;

    static const struct bit leaf1[] = {
        {"sse", 3, 25}, {"sse2", 3, 26}, {"pni", 2, 0}, {"pclmulqdq", 2, 1}, {"ssse3", 2, 9},
        {"sse4_1", 2, 19}, {"sse4_2", 2, 20}, {"movbe", 2, 22}, {"popcnt", 2, 23}, {"aes", 2, 25},
        {"rdrand", 2, 30},
    };
    static const struct bit leaf1_avx[] = {{"avx", 2, 28}, {"fma", 2, 12}, {"f16c", 2, 29}};
    if (add_bits(list, r, leaf1, sizeof leaf1 / sizeof *leaf1) < 0) goto fail;
    if (os_avx && add_bits(list, r, leaf1_avx, sizeof leaf1_avx / sizeof *leaf1_avx) < 0) goto fail;

    if (max_leaf >= 7) {
        __cpuid_count(7, 0, r[0], r[1], r[2], r[3]);
        static const struct bit leaf7[] = {
            {"bmi1", 1, 3}, {"bmi2", 1, 8}, {"rdseed", 1, 18}, {"adx", 1, 19}, {"sha_ni", 1, 29},
            {"gfni", 2, 8},
        };
        static const struct bit leaf7_avx[] = {{"avx2", 1, 5}, {"vaes", 2, 9}, {"vpclmulqdq", 2, 10}};
        static const struct bit leaf7_avx512[] = {
            {"avx512f", 1, 16}, {"avx512dq", 1, 17}, {"avx512ifma", 1, 21}, {"avx512cd", 1, 28},
            {"avx512bw", 1, 30}, {"avx512vl", 1, 31}, {"avx512vbmi", 2, 1}, {"avx512_vbmi2", 2, 6},
            {"avx512_vnni", 2, 11}, {"avx512_bitalg", 2, 12}, {"avx512_vpopcntdq", 2, 14},
            {"avx512_fp16", 3, 23},
        };
        static const struct bit leaf7_amx[] = {{"amx_bf16", 3, 22}, {"amx_tile", 3, 24}, {"amx_int8", 3, 25}};
        if (add_bits(list, r, leaf7, sizeof leaf7 / sizeof *leaf7) < 0) goto fail;
        if (os_avx && add_bits(list, r, leaf7_avx, sizeof leaf7_avx / sizeof *leaf7_avx) < 0) goto fail;
        if (os_avx512 && add_bits(list, r, leaf7_avx512, sizeof leaf7_avx512 / sizeof *leaf7_avx512) < 0) goto fail;
        if (os_amx && add_bits(list, r, leaf7_amx, sizeof leaf7_amx / sizeof *leaf7_amx) < 0) goto fail;
        const unsigned int subleaves = r[0];
        if (subleaves >= 1) {
            __cpuid_count(7, 1, r[0], r[1], r[2], r[3]);
            if (os_avx && ((r[0] >> 4) & 1u) && add(list, "avx_vnni") < 0) goto fail;
            if (os_avx512 && ((r[0] >> 5) & 1u) && add(list, "avx512_bf16") < 0) goto fail;
        }
    }
    if (__get_cpuid_max(0x80000000, NULL) >= 0x80000001) {
        __cpuid(0x80000001, r[0], r[1], r[2], r[3]);
        if (((r[2] >> 5) & 1u) && add(list, "abm") < 0) goto fail;
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}
#else
static PyObject *features(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    Py_RETURN_NONE; /* not x86-64: the caller falls back to the OS's view */
}
#endif

static PyMethodDef methods[] = {
    {"features", features, METH_NOARGS,
     "ISA extensions of the running CPU usable under this OS, as /proc/cpuinfo names them (None off x86-64)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpuid", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cpuid(void) { return PyModule_Create(&module); }
