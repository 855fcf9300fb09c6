/*
 * insn_count.c: a QEMU TCG plugin (plugin API version 1, QEMU 7.2 as in Debian bookworm) that counts
 * executed guest instructions, in total and inside marked regions.
 *
 * Build:  gcc -shared -fPIC -O2 -o insn_count.so insn_count.c
 * Use:    qemu-aarch64 -plugin ./insn_count.so,out=/tmp/counts.json[,mode=atomic] ... guest-program
 *
 * Counting: every translated block adds its instruction count to one 64-bit counter when it starts
 * executing (exact for straight-line blocks; a block left early by a fault is rare and never happens
 * on the inference path). Two modes:
 *   mode=inline (default): an inline add generated into the block, about 2x cheaper than a callback,
 *     exact while one guest thread runs. Guest threads are host threads under user-mode emulation and
 *     the inline add is not atomic, so concurrent threads could lose updates.
 *   mode=atomic: a callback per block doing an atomic add; exact with any number of guest threads.
 *
 * Regions: the edgebench runner (with --insn-markers) brackets code with a harmless failing syscall,
 * lseek(-1, MAGIC_START/MAGIC_END, 0), which returns EBADF on any kernel. On MAGIC_START the counter
 * is remembered; on MAGIC_END the difference is appended to the region list. Regions do not nest.
 *
 * Classes: every instruction is also counted in one class, decided once at translation from its A64
 * encoding (the top-level op0 field, bits 28:25, and bit 26 for loads/stores), so the latency estimate
 * can give each class its own cost (devices/calibration.py):
 *   simd      x111: scalar floating point and Advanced SIMD data processing (the NEON kernels' arithmetic)
 *   simd_ldst x1x0 with bit 26 set: loads/stores of SIMD&FP registers (kernels streaming weights/activations)
 *   ldst      x1x0 with bit 26 clear: general-register loads/stores (interpreter, dispatch, Python)
 *   branch    101x: branches, exception generation, system instructions
 *   int       100x and x101: integer data processing (immediate and register)
 *   other     0000-0011: reserved, SME, SVE (none on a Cortex-A72)
 * The classes add up to the total exactly.
 *
 * At exit the plugin writes one JSON document to `out`:
 *   {"total": N, "unclosed": 0|1, "regions": [n0, n1, ...],
 *    "classes": ["simd", ...], "class_totals": [...], "region_classes": [[...], ...],
 *    "region_harness": [h0, h1, ...] (with harness=PATH)}
 *
 * Interpreter split (optional, harness=PATH): instructions of code mapped from the file PATH (the guest's Python
 * interpreter binary, compared with /proc/self/maps' resolved path) are also counted apart in every region, as
 * "region_harness". What the runtime library, libc and numpy execute stays outside it. A kernel timed alone pays
 * the Python harness of session.run (converting the feed, building the outputs) once per call, and the
 * interpreter's instructions there depend on its state (garbage-collector counts, free lists: the same kernel
 * after other sessions executed ~1,300 fewer interpreter instructions per call, while onnxruntime's own count
 * was identical); the kernel predictor subtracts them (search/predictor.py).
 *
 * Code attribution (optional, blocks=PATH): every translated block also counts its own executions, and the
 * instructions it executed inside marked regions are written at exit to PATH, one block per line:
 *   FILE_OFFSET_HEX INSTRUCTIONS PATH_OF_THE_MAPPED_FILE
 * The block's code is located through the host address of its first instruction in the host's
 * /proc/self/maps: under user-mode emulation the guest's libraries are host mmaps of the same files, so the
 * line names the library (e.g. ai-edge-litert's .so) and the offset in it, which its symbol table turns
 * into a function (devices/calibration.py: attribute_blocks). Code in no file has an empty path.
 *
 * No QEMU header package exists in Debian bookworm, so the few declarations used are written out
 * below, copied in meaning from QEMU 7.2's include/qemu/qemu-plugin.h (API version 1).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- from QEMU 7.2 include/qemu/qemu-plugin.h (API version 1) ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                                              uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn;
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void *qemu_plugin_insn_haddr(const struct qemu_plugin_insn *insn);
/* ---- end of QEMU declarations ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define AARCH64_NR_LSEEK 62
#define MAGIC_START 0x4544474542530001ULL /* "EDGEBS" + 1 */
#define MAGIC_END 0x4544474542530002ULL

enum { C_SIMD, C_SIMD_LDST, C_LDST, C_BRANCH, C_INT, C_OTHER, N_CLASSES };
static const char *class_names[N_CLASSES] = {"simd", "simd_ldst", "ldst", "branch", "int", "other"};

static uint64_t total;
static uint64_t harness_total;         /* instructions in the harness file (harness=PATH) */
static uint64_t region_harness_start;
static uint64_t *region_harness;       /* n_regions harness counts */
static char harness_path[4096];
static uint64_t class_total[N_CLASSES];
static uint64_t region_start, region_class_start[N_CLASSES];
static bool in_region;
static uint64_t *regions;       /* n_regions totals */
static uint64_t *region_classes; /* n_regions x N_CLASSES */
static size_t n_regions, cap_regions;

/* a translated block, for code attribution (blocks=PATH; allocated per translation, never freed: blocks are
   translated once and the process is short-lived) */
struct block {
    uint64_t execs, start, in_regions; /* executions; at the open region's start; inside closed regions */
    uintptr_t haddr;                    /* host address of the first instruction */
    uint64_t n;
    struct block *next;
};
static struct block *blocks;
static char blocks_path[4096];

/* one translated block's counts, for the atomic callback (allocated per translation, never freed) */
struct tb_counts {
    uint64_t n;
    uint64_t by_class[N_CLASSES];
    struct block *block; /* NULL unless blocks=PATH */
    bool harness;        /* code of the harness file (harness=PATH) */
};

/* harness=PATH: is host address `haddr` in a mapping of that file? The mappings are read from /proc/self/maps
   and read again when an address is in none of them (a library loaded since). Translation is serialised. */
struct span { uintptr_t lo, hi; bool harness; };
static struct span *spans;
static size_t n_spans;

static void read_spans(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    size_t cap = 0;
    char line[4096], path[4096];
    n_spans = 0;
    while (maps != NULL && fgets(line, sizeof(line), maps)) {
        uintptr_t lo, hi;
        int at = 0;
        path[0] = 0;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %*s %*s %*s %*s %n", &lo, &hi, &at) < 2)
            continue;
        if (at > 0)
            sscanf(line + at, "%4095[^\n]", path);
        if (n_spans == cap) {
            struct span *grown = realloc(spans, (cap = cap ? 2 * cap : 256) * sizeof(*spans));
            if (grown == NULL)
                break;
            spans = grown;
        }
        spans[n_spans++] = (struct span){lo, hi, strcmp(path, harness_path) == 0};
    }
    if (maps != NULL)
        fclose(maps);
}

static bool in_harness(uintptr_t haddr)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n_spans; i++)
            if (spans[i].lo <= haddr && haddr < spans[i].hi)
                return spans[i].harness;
        if (pass == 0)
            read_spans();
    }
    return false;
}

static int insn_class(uint32_t w)
{
    uint32_t op0 = (w >> 25) & 0xF;
    if ((op0 & 0x7) == 0x7)
        return C_SIMD;
    if ((op0 & 0x5) == 0x4)
        return (w >> 26) & 1 ? C_SIMD_LDST : C_LDST;
    if ((op0 & 0xE) == 0xA)
        return C_BRANCH;
    if ((op0 & 0xE) == 0x8 || (op0 & 0x7) == 0x5)
        return C_INT;
    return C_OTHER;
}
static char out_path[4096];
static bool atomic_mode; /* mode=atomic: a callback per block with an atomic add (any thread count) */

static void tb_exec(unsigned int vcpu_index, void *udata)
{
    const struct tb_counts *c = udata;
    for (int k = 0; k < N_CLASSES; k++)
        if (c->by_class[k])
            __atomic_fetch_add(&class_total[k], c->by_class[k], __ATOMIC_RELAXED);
    __atomic_fetch_add(&total, c->n, __ATOMIC_RELAXED);
    if (c->harness)
        __atomic_fetch_add(&harness_total, c->n, __ATOMIC_RELAXED);
    if (c->block)
        __atomic_fetch_add(&c->block->execs, 1, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t by_class[N_CLASSES] = {0};
    for (size_t i = 0; i < n; i++) {
        const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t w = 0;
        if (qemu_plugin_insn_size(insn) == 4)
            memcpy(&w, qemu_plugin_insn_data(insn), 4); /* aarch64 guests run little-endian here */
        by_class[insn_class(w)]++;
    }
    bool harness = harness_path[0] && n > 0 && in_harness((uintptr_t)qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0)));
    struct block *b = NULL;
    if (blocks_path[0] && n > 0) { /* translation is serialised (mmap_lock): the list needs no lock */
        b = calloc(1, sizeof(*b));
        if (b != NULL) {
            b->haddr = (uintptr_t)qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0));
            b->n = n;
            b->next = blocks;
            blocks = b;
        }
    }
    if (atomic_mode) {
        struct tb_counts *c = malloc(sizeof(*c));
        if (c == NULL)
            return;
        c->n = n;
        memcpy(c->by_class, by_class, sizeof(by_class));
        c->block = b;
        c->harness = harness;
        qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, c);
        return;
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    if (harness)
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &harness_total, n);
    if (b != NULL)
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
    for (int k = 0; k < N_CLASSES; k++)
        if (by_class[k])
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &class_total[k], by_class[k]);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != AARCH64_NR_LSEEK || (int32_t)a1 != -1)
        return;
    uint64_t now = __atomic_load_n(&total, __ATOMIC_RELAXED);
    if (a2 == MAGIC_START) {
        region_start = now;
        region_harness_start = __atomic_load_n(&harness_total, __ATOMIC_RELAXED);
        for (int k = 0; k < N_CLASSES; k++)
            region_class_start[k] = __atomic_load_n(&class_total[k], __ATOMIC_RELAXED);
        in_region = true;
        for (struct block *b = blocks; b; b = b->next)
            b->start = __atomic_load_n(&b->execs, __ATOMIC_RELAXED);
    } else if (a2 == MAGIC_END && in_region) {
        for (struct block *b = blocks; b; b = b->next)
            b->in_regions += __atomic_load_n(&b->execs, __ATOMIC_RELAXED) - b->start;
        if (n_regions == cap_regions) {
            size_t cap = cap_regions ? 2 * cap_regions : 1024;
            uint64_t *grown = realloc(regions, cap * sizeof(*regions));
            if (grown == NULL)
                return;
            regions = grown;
            uint64_t *grown_c = realloc(region_classes, cap * N_CLASSES * sizeof(*region_classes));
            if (grown_c == NULL)
                return;
            region_classes = grown_c;
            uint64_t *grown_h = realloc(region_harness, cap * sizeof(*region_harness));
            if (grown_h == NULL)
                return;
            region_harness = grown_h;
            cap_regions = cap;
        }
        for (int k = 0; k < N_CLASSES; k++)
            region_classes[n_regions * N_CLASSES + k] =
                __atomic_load_n(&class_total[k], __ATOMIC_RELAXED) - region_class_start[k];
        region_harness[n_regions] = __atomic_load_n(&harness_total, __ATOMIC_RELAXED) - region_harness_start;
        regions[n_regions++] = now - region_start;
        in_region = false;
    }
}

/* blocks=PATH: each block's instructions inside closed regions, located in the file mapped at its address */
static void write_blocks(void)
{
    FILE *maps = fopen("/proc/self/maps", "r"), *f = fopen(blocks_path, "w");
    size_t n_maps = 0, cap = 0;
    struct map { uintptr_t lo, hi; uint64_t offset; char path[512]; } *m = NULL;
    char line[4096];
    while (maps != NULL && fgets(line, sizeof(line), maps)) {
        if (n_maps == cap) {
            struct map *grown = realloc(m, (cap = cap ? 2 * cap : 256) * sizeof(*m));
            if (grown == NULL)
                break;
            m = grown;
        }
        struct map *e = &m[n_maps];
        int at = 0;
        e->path[0] = 0;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %*s %" SCNx64 " %*s %*s %n", &e->lo, &e->hi, &e->offset, &at) < 3)
            continue;
        if (at > 0)
            sscanf(line + at, "%511[^\n]", e->path);
        n_maps++;
    }
    if (maps != NULL)
        fclose(maps);
    if (f == NULL) {
        free(m);
        return;
    }
    for (struct block *b = blocks; b; b = b->next) {
        if (b->in_regions == 0)
            continue;
        const struct map *e = NULL;
        for (size_t i = 0; i < n_maps && e == NULL; i++)
            if (m[i].lo <= b->haddr && b->haddr < m[i].hi)
                e = &m[i];
        fprintf(f, "%" PRIx64 " %" PRIu64 " %s\n", e ? (uint64_t)(b->haddr - e->lo + e->offset) : (uint64_t)b->haddr,
                b->in_regions * b->n, e && e->path[0] == '/' ? e->path : "");
    }
    fclose(f);
    free(m);
}

static void plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    if (blocks_path[0])
        write_blocks();
    FILE *f = out_path[0] ? fopen(out_path, "w") : stderr;
    if (f == NULL)
        return;
    fprintf(f, "{\"total\": %" PRIu64 ", \"unclosed\": %d, \"regions\": [", total, in_region ? 1 : 0);
    for (size_t i = 0; i < n_regions; i++)
        fprintf(f, "%s%" PRIu64, i ? ", " : "", regions[i]);
    fprintf(f, "], \"classes\": [");
    for (int k = 0; k < N_CLASSES; k++)
        fprintf(f, "%s\"%s\"", k ? ", " : "", class_names[k]);
    fprintf(f, "], \"class_totals\": [");
    for (int k = 0; k < N_CLASSES; k++)
        fprintf(f, "%s%" PRIu64, k ? ", " : "", class_total[k]);
    fprintf(f, "], \"region_classes\": [");
    for (size_t i = 0; i < n_regions; i++) {
        fprintf(f, "%s[", i ? ", " : "");
        for (int k = 0; k < N_CLASSES; k++)
            fprintf(f, "%s%" PRIu64, k ? ", " : "", region_classes[i * N_CLASSES + k]);
        fprintf(f, "]");
    }
    fprintf(f, "]");
    if (harness_path[0]) {
        fprintf(f, ", \"region_harness\": [");
        for (size_t i = 0; i < n_regions; i++)
            fprintf(f, "%s%" PRIu64, i ? ", " : "", region_harness[i]);
        fprintf(f, "]");
    }
    fprintf(f, "}\n");
    if (f != stderr)
        fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof(out_path), "%s", argv[i] + 4);
        } else if (strncmp(argv[i], "harness=", 8) == 0) {
            snprintf(harness_path, sizeof(harness_path), "%s", argv[i] + 8);
        } else if (strncmp(argv[i], "blocks=", 7) == 0) {
            snprintf(blocks_path, sizeof(blocks_path), "%s", argv[i] + 7);
        } else if (strcmp(argv[i], "mode=atomic") == 0 || strcmp(argv[i], "mode=inline") == 0) {
            atomic_mode = strcmp(argv[i], "mode=atomic") == 0;
        } else {
            fprintf(stderr, "insn_count: unknown argument '%s' (known: out=PATH, mode=inline|atomic, blocks=PATH, harness=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
