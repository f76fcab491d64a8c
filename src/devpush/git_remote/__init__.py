"""The platform's own git remote: `git push` to `/git/{team}/{project}.git` over smart HTTP
(`git http-backend` as a CGI), stored in a bare repository per project, deployed by a fixed
post-receive hook program that streams the build back to the pusher."""
