#!/usr/bin/env python3
"""Publish a table to the local fleetsql agent through libfleetsql (ctypes).

    python3 publish.py path/to/libfleetsql.so 127.0.0.1:7070

then: SELECT * FROM py_services
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else "libfleetsql.so")
addr = (sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:7070").encode()

lib.fleetsql_table_new.restype = ctypes.c_void_p
lib.fleetsql_table_new.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t]
lib.fleetsql_table_add_row.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
lib.fleetsql_publish.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
lib.fleetsql_table_free.argtypes = [ctypes.c_void_p]
lib.fleetsql_last_error.restype = ctypes.c_char_p


def strings(values):
    return (ctypes.c_char_p * len(values))(*[v.encode() for v in values])


columns = ["svc", "up"]
table = lib.fleetsql_table_new(b"py_services", strings(columns), len(columns))
for row in [["web", "1"], ["db", "0"]]:
    lib.fleetsql_table_add_row(table, strings(row))
if lib.fleetsql_publish(table, addr, b"python-example") != 0:
    sys.exit("publish failed: " + lib.fleetsql_last_error().decode())
lib.fleetsql_table_free(table)
print("published py_services")
