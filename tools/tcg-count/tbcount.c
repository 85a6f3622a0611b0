/* QEMU TCG plugin: counts guest blocks translated and instructions executed, kernel and
 * user space apart, and writes them at exit. See README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
typedef uint64_t qemu_plugin_id_t;
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
typedef struct { const char *target_name; struct { int min; int cur; } version; bool system_emulation; union { struct { int smp_vcpus; int max_vcpus; } system; }; } qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
static uint64_t kexec, uexec, ktrans, utrans, ktransi, utransi;
static const char *out = "/tmp/tbcount.txt";
static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    bool k = qemu_plugin_tb_vaddr(tb) >= 0xffff800000000000ULL;
    if (k) { ktrans++; ktransi += n; } else { utrans++; utransi += n; }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, k ? &kexec : &uexec, n);
}
static void dump(void) {
    FILE *f = fopen(out, "w");
    if (!f) return;
    fprintf(f, "kexec %llu uexec %llu ktrans %llu utrans %llu ktransi %llu utransi %llu\n",
        (unsigned long long)kexec, (unsigned long long)uexec, (unsigned long long)ktrans,
        (unsigned long long)utrans, (unsigned long long)ktransi, (unsigned long long)utransi);
    fclose(f);
}
static void at_exit(qemu_plugin_id_t id, void *p) { dump(); }
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) if (!strncmp(argv[i], "out=", 4)) out = strdup(argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
