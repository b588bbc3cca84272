/*
 * Copyright 2026 The corten authors.
 *
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License.
 * You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 *
 * The pod sandbox ("infra") container of corten's local registry.k8s.io/pause
 * image, built by scripts/images.sh with `gcc -static -Os`.
 *
 * It holds the pod's namespaces open by doing nothing: it sleeps in pause()
 * until it is told to stop. SIGINT and SIGTERM end it with status 0. When the
 * pod shares one PID namespace it is that namespace's PID 1, so orphaned
 * processes of the other containers are re-parented to it: on SIGCHLD it
 * collects every child that has exited, so none lingers as a zombie.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10"

static void stop(int signo)
{
	(void)signo;
	_exit(0);
}

static void reap(int signo)
{
	int saved_errno = errno;

	(void)signo;
	/* One SIGCHLD may stand for several exits: collect all that are ready. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved_errno;
}

static int handle(int signo, void (*fn)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("pause (corten) %s\n", VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: not running as PID 1; zombies of other processes are not mine to reap\n");

	if (handle(SIGINT, stop, 0) || handle(SIGTERM, stop, 0) ||
	    handle(SIGCHLD, reap, SA_NOCLDSTOP | SA_RESTART)) {
		perror("pause: sigaction");
		return 1;
	}
	/* Children that exited before the handler was installed. */
	reap(SIGCHLD);

	for (;;)
		pause();
}
