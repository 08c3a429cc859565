/*
 * jsonl: reads training and evaluation data in JSON Lines, one record per
 * line, streaming (a line at a time, never the whole file in memory).
 *
 * A record is a JSON object of one of two forms:
 *   {"text": STRING}                           language-model text
 *   {"prompt": STRING, "completion": STRING}   completion scored after a prompt
 * Other keys are ignored (so ids, labels and other metadata may travel in the
 * file).  Both forms in one object, neither, a missing half of the second
 * form, a non-string value, a non-object line, a duplicate key or invalid
 * JSON is an error "NAME:LINE: problem" naming the input and its 1-based
 * line number.  Lines that hold only JSON whitespace (space, tab, CR) are
 * skipped but still counted; CRLF line ends are accepted; a UTF-8 byte order
 * mark at the start of the input is skipped; the last line needs no newline.
 * Strings are UTF-8 (jansson rejects invalid UTF-8); an escaped NUL
 * ("\u0000") is kept, so strings carry an explicit length (and a trailing
 * NUL for convenience).
 *
 * Limits: a line may hold at most SW_JSONL_MAX_LINE bytes (its newline not
 * counted) and an input at most SW_JSONL_MAX_BYTES bytes; past either the
 * reader fails with SW_ETOOBIG naming the line.
 *
 * Ownership: a reader owns its buffer and its FILE; a record owns its
 * strings (release with sw_jsonl_record_fini).  A reader is used by one
 * thread at a time; separate readers are independent.
 */
#ifndef SW_JSONL_H
#define SW_JSONL_H

#include <stddef.h>
#include <stdint.h>

#include "sw_error.h"

#define SW_JSONL_MAX_LINE ((size_t)1 << 20)
#define SW_JSONL_MAX_BYTES ((uint64_t)1 << 30)

typedef enum sw_jsonl_kind {
    SW_JSONL_TEXT = 1,
    SW_JSONL_PROMPT_COMPLETION = 2,
} sw_jsonl_kind;

/* One parsed line.  Zero-initialise; sw_jsonl_record_fini releases it. */
typedef struct sw_jsonl_record {
    sw_jsonl_kind kind;
    char *text;       /* TEXT: the text; PROMPT_COMPLETION: the prompt */
    size_t text_len;  /* bytes, excluding the trailing NUL */
    char *completion; /* PROMPT_COMPLETION only, else NULL */
    size_t completion_len;
    uint64_t line; /* 1-based line number in the input */
} sw_jsonl_record;

/* Frees a record's strings and zeroes it; accepts a zeroed record. */
void sw_jsonl_record_fini(sw_jsonl_record *rec);

/*
 * Parses one line (without its newline; a trailing CR is allowed) into *out.
 * name and lineno only label error messages and out->line.  Returns 0 with a
 * record, 1 for a blank line (out untouched), or a negative code
 * (SW_EFORMAT, SW_ETOOBIG for a line over SW_JSONL_MAX_LINE, SW_ENOMEM) with
 * "NAME:LINE: ..." in diag.  On failure *out is untouched.
 */
int sw_jsonl_parse_line(const char *line, size_t len, const char *name, uint64_t lineno,
                        sw_jsonl_record *out, sw_diag *diag);

typedef struct sw_jsonl_reader sw_jsonl_reader;

/* Opens a file for reading; errors name the path. */
int sw_jsonl_open(const char *path, sw_jsonl_reader **out, sw_diag *diag);
/*
 * Reads from memory (data[0..len), not copied: it must outlive the reader);
 * name labels errors.  Same rules and limits as a file.
 */
int sw_jsonl_open_mem(const void *data, size_t len, const char *name, sw_jsonl_reader **out,
                      sw_diag *diag);
/* Accepts NULL. */
void sw_jsonl_close(sw_jsonl_reader *r);

/*
 * Reads the next record, skipping blank lines.  Returns 1 with a record in
 * *out (the caller finis it), 0 at the end of the input, or a negative code
 * with "NAME:LINE: ..." in diag (the reader is then unusable).
 */
int sw_jsonl_next(sw_jsonl_reader *r, sw_jsonl_record *out, sw_diag *diag);

/* The input's name as given to open (a path for files). */
const char *sw_jsonl_name(const sw_jsonl_reader *r);

#endif
