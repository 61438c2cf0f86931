# Otter: one image for every role (ROLE=all|api|worker) and for the simulator.
# TypeScript runs through tsx at runtime, so the image holds the sources, not a build.
FROM node:22-slim

ENV NODE_ENV=production \
    PORT=3000 \
    HOST=0.0.0.0 \
    STORAGE_DIR=/app/data/firmware

WORKDIR /app

# dependencies first, so a source change does not reinstall them
COPY --chown=node:node package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY --chown=node:node . .

# uploaded firmware lives here; a named volume mounted on it inherits this ownership
RUN mkdir -p /app/data/firmware && chown -R node:node /app/data

USER node

EXPOSE 3000
VOLUME ["/app/data/firmware"]

# health checks live in docker-compose.yml (every role answers /health/* on PORT; the simulator does not)
# The service itself, not `npm start`: npm exits at once on SIGTERM and the container is gone before
# the graceful shutdown (docs/operations.md#start-up-and-shutdown) has run. The flags are those of
# package.json's start script. docker-compose.yml adds an init (`init: true`) that forwards signals
# and reaps; without one, node as PID 1 still shuts down on SIGTERM (it installs its own handlers).
CMD ["node", "--max-old-space-size=256", "--max-semi-space-size=64", "--import", "tsx", "service/main.ts"]
