/* validation.c: when a scoring is due, and which score is the best. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "validation.h"

/* Due at the first step, then at each multiple of every, and once at the end. */
static void test_due(void **state)
{
    (void)state;
    swd_validation v;
    sw_dataset *fake = (sw_dataset *)&v; /* never read: only "is validation on" */
    swd_validation_init(&v, fake, 5, false, "/nonexistent", "/nonexistent", 3);
    assert_false(swd_validation_due(&v, 2, false));
    assert_true(swd_validation_due(&v, 3, false));
    v.next_step = (3 / 5 + 1) * 5; /* what a run at step 3 leaves */
    v.rep.evals = 1;
    v.rep.step = 3;
    assert_false(swd_validation_due(&v, 4, false));
    assert_true(swd_validation_due(&v, 5, false));
    assert_true(swd_validation_due(&v, 7, true)); /* done at 7: scored once */
    v.rep.step = 7;
    assert_false(swd_validation_due(&v, 7, true)); /* ... not twice */
    v.ds = NULL;
    assert_false(swd_validation_due(&v, 5, false)); /* off */
    assert_false(swd_validation_due(&v, 7, true));
}

/* The highest accuracy wins, ties go to the lower loss; without accuracy the
 * lower loss; a non-finite loss never. */
static void test_better(void **state)
{
    (void)state;
    swd_valid_report r;
    memset(&r, 0, sizeof r);
    assert_true(swd_validation_better(&r, 3.0, 0.5)); /* none yet */
    assert_false(swd_validation_better(&r, NAN, 0.5));
    assert_false(swd_validation_better(&r, INFINITY, NAN));
    r.has_best = true;
    r.best_loss = 2.0;
    r.best_accuracy = 0.5;
    assert_true(swd_validation_better(&r, 9.0, 0.6));  /* more accurate, worse loss */
    assert_false(swd_validation_better(&r, 1.0, 0.4)); /* less accurate, better loss */
    assert_true(swd_validation_better(&r, 1.9, 0.5));  /* tie: lower loss */
    assert_false(swd_validation_better(&r, 2.0, 0.5)); /* equal: not better */
    r.best_accuracy = NAN;                             /* text data */
    assert_true(swd_validation_better(&r, 1.5, NAN));
    assert_false(swd_validation_better(&r, 2.5, NAN));
    assert_false(swd_validation_better(&r, NAN, NAN));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_due),
        cmocka_unit_test(test_better),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
