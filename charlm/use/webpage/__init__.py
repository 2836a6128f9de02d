"""The web export's page: index.html (a template charlm.use.web fills in) and charlm.js, its script."""
