print("kuberules")
