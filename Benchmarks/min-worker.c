/* The least a persistent worker can do (make bench): say ready, then answer
 * each envelope line with an ack for its id. Finds "id" as the envelope's
 * first key, which is where warren writes it. */
#include <stdio.h>
#include <string.h>

int main(void) {
    static char line[1 << 20];
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    fputs("{\"ready\":true}\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        const char *start = strstr(line, "\"id\":\"");
        if (start == NULL) return 1;
        start += 6;
        const char *end = strchr(start, '"');
        if (end == NULL) return 1;
        printf("{\"id\":\"%.*s\",\"outcome\":\"ack\"}\n", (int)(end - start), start);
        fflush(stdout);
    }
    return 0;
}
