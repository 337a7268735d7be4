/* getaddrinfo with a pod's resolv.conf, built with `musl-gcc -static` so
 * that the stub resolver is musl's (1.2.3 in Debian: no TCP retry on TC).
 * Each argument is `<name>/<v4|v6|any>`; each line printed is
 * `<argument>\t<JSON array of the addresses>` or `<argument>\t{"err": ...}`. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char name[256];
		snprintf(name, sizeof name, "%s", argv[i]);
		char *slash = strrchr(name, '/');
		if (!slash)
			return 2;
		*slash = 0;
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
		hints.ai_family = !strcmp(slash + 1, "v4") ? AF_INET
			: !strcmp(slash + 1, "v6") ? AF_INET6 : AF_UNSPEC;
		struct addrinfo *res;
		int rc = getaddrinfo(name, NULL, &hints, &res);
		if (rc) {
			printf("%s\t{\"err\": \"%s\"}\n", argv[i], gai_strerror(rc));
			continue;
		}
		printf("%s\t[", argv[i]);
		for (struct addrinfo *a = res; a; a = a->ai_next) {
			char text[INET6_ADDRSTRLEN];
			const void *addr = a->ai_family == AF_INET
				? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
				: (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
			inet_ntop(a->ai_family, addr, text, sizeof text);
			printf("%s\"%s\"", a == res ? "" : ", ", text);
		}
		printf("]\n");
		freeaddrinfo(res);
	}
	return 0;
}
