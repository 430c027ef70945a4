/* synthetic */
#define PY_MAJOR_VERSION 3
#define PY_VERSION "3.13.9"
