"""Online serving of the mesh's Production release (`depmesh serve`): the served set and how it follows the
registry (served, follower), request checks (schema, requests), the fast predictor (fast), rollout figures from
live requests (figures), metrics, and the Starlette application (app)."""
