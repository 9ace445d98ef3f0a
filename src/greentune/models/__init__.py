"""Models: backbone loading, numeric encoders, forecasting and classification heads."""
