/* chello: the docker-mode test for C sources (kind = "c"), like Kubernetes' pause. */
#include <stdio.h>
#include <string.h>

#define STR(x) #x
#define XSTR(x) STR(x)

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("chello %s\n", XSTR(VERSION));
    return 0;
  }
  puts("hello from C");
  return 0;
}
