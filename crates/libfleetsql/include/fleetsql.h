/*
 * fleetsql.h: publish a table from any local process to the fleetsql agent.
 *
 *     const char *cols[] = {"svc", "up"};
 *     fleetsql_table *t = fleetsql_table_new("services", cols, 2);
 *     const char *row[] = {"web", "1"};
 *     fleetsql_table_add_row(t, row);
 *     if (fleetsql_publish(t, NULL, "myservice") != 0)
 *         fprintf(stderr, "%s\n", fleetsql_last_error());
 *     fleetsql_table_free(t);
 *
 * Link with -lfleetsql. Values are text; the agent infers each column's
 * type (integer, float, boolean, text) as for CSV. A publish replaces this
 * publisher's rows of the table. Functions return 0 on success and -1 on
 * failure; fleetsql_last_error() then describes it (per thread, valid until
 * the next call).
 */
#ifndef FLEETSQL_H
#define FLEETSQL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fleetsql_table fleetsql_table;

/* A new table named `name` with `ncolumns` column names; NULL on bad input. */
fleetsql_table *fleetsql_table_new(const char *name, const char *const *columns, size_t ncolumns);

/* Appends a row of exactly ncolumns values; a NULL value is an empty field. */
int fleetsql_table_add_row(fleetsql_table *table, const char *const *values);

/* Rows added so far. */
size_t fleetsql_table_rows(const fleetsql_table *table);

/* Publishes the table to the agent at `addr` ("127.0.0.1:7070"; NULL means
 * $FLEETSQL_PUBLISH or 127.0.0.1:7070) as `publisher` (NULL: "http"). */
int fleetsql_publish(const fleetsql_table *table, const char *addr, const char *publisher);

/* Withdraws `publisher`'s rows of table `name`. */
int fleetsql_withdraw(const char *name, const char *addr, const char *publisher);

/* Frees a table (NULL is fine). */
void fleetsql_table_free(fleetsql_table *table);

/* What the last failing call on this thread was about ("" if none). */
const char *fleetsql_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
