# Otter: one image for every role (ROLE=all|api|worker) and for the simulator.
# TypeScript runs through tsx at runtime, so the image holds the sources, not a build.
FROM node:20-slim

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
CMD ["npm", "start"]
